"""The bytecode counter behind loadtests/bench/hotpath.py: it runs a tree's infer path and protocol, and counts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from loadtests.bench import hotpath
from loadtests.bench.v2 import write_bodies

REPO = Path(__file__).resolve().parents[3]


def test_counts_the_infer_path_and_both_protocols(tmp_path: Path) -> None:
    body = write_bodies("input", np.zeros((1, 1, 8, 8), np.float32), "logits", tmp_path)["binary"]
    length = body.headers["Inference-Header-Content-Length"]
    app = hotpath._run(REPO, 64, "ops", body.path, length)
    assert app["requests"] == 64
    # the infer route, the data plane and the codec all ran, every request answered 200 (else the driver exits)
    functions = " ".join(app["by_function"])
    for name in ("app.py:infer", "dataplane.py:infer", "codec.py:decode_request"):
        assert name in functions
    plain = hotpath._run(REPO, 64, "protocol-plain", body.path, length)
    guarded = hotpath._run(REPO, 64, "protocol-guarded", body.path, length)
    assert "httpserver.py:on_headers_complete" in " ".join(guarded["by_function"])
    assert "httpserver.py" not in " ".join(plain["by_function"])
    assert guarded["ops_per_request"] > plain["ops_per_request"] > 0


def test_the_report_gives_ratios_against_a_base() -> None:
    tree = {
        "app_ops_per_request": 1800.0,
        "app_cpu_us_per_request_min": 27.0,
        "app_top_functions": {"a": 1.0},
        "protocol_ops_uvicorn": 1100.0,
        "protocol_ops_guarded": 1200.0,
        "gateway_ops_per_request": 2300.0,
    }
    base = {**tree, "app_ops_per_request": 2400.0, "protocol_ops_guarded": 1100.0, "gateway_ops_per_request": 2400.0}
    result = {
        "machine": {"date_utc": "now", "cpu_model": "cpu", "commit": "abc"},
        "requests": 10,
        "base_label": "old",
        "base": base,
        "tree": tree,
        "metric_updates": {"x": 1.0},
    }
    text = hotpath.report(result)
    assert "| app: bytecodes per request | 2,400.0 | 1,800.0 | 0.750 |" in text
    assert "| app + protocol as served, bytecodes | 3,500.0 | 3,000.0 | 0.857 |" in text
    assert "| gateway + protocol as served, bytecodes | 3,500.0 | 3,500.0 | 1.000 |" in text


def test_counts_the_gateway_in_front_of_a_real_model_server(tmp_path: Path) -> None:
    from loadtests.bench.process import free_port, serving

    body = write_bodies("input", np.zeros((1, 1, 8, 8), np.float32), "logits", tmp_path)["binary"]
    port = free_port()
    cmd = [sys.executable, "-m", "services.cli", "serve", "--repository", str(REPO / "models")]
    cmd += ["--model", "digits:1", "--port", str(port), "--poll-interval", "0"]
    with serving(cmd, f"http://127.0.0.1:{port}/v2/health/ready", tmp_path / "ms.log", cwd=REPO):
        gateway = hotpath._run(
            REPO, 32, "gateway", body.path, body.headers["Inference-Header-Content-Length"], str(port)
        )
    functions = " ".join(gateway["by_function"])
    assert "gateway/app.py:handle" in functions and "common/client.py:request" in functions
    assert gateway["ops_per_request"] > 0


def test_a_base_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--base-commit 'no-such-rev': git archive failed"):
        hotpath.main(["--base-commit", "no-such-rev", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a meshserve source tree"):
        hotpath.main(["--base", str(tmp_path), "--out", str(tmp_path)])
