"""Triton's perf_analyzer, the standard Triton/KServe benchmark tool, runs against `meshserve serve`
over HTTP and gRPC: it reads the model config and the statistics, exits 0 and reports throughput."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loadtests.bench import perf_analyzer
from tests.services.modelserver.serverproc import ROOT, run_server


@pytest.fixture(scope="module")
def binary() -> tuple[Path, dict]:
    try:
        path, env = perf_analyzer.ensure()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot install {perf_analyzer.PINS} into {perf_analyzer.venv_dir()}: {exc}")
    probe = subprocess.run([str(path), "--version"], env=env, capture_output=True, text=True, check=False)
    if "error while loading shared libraries" in probe.stderr:
        pytest.skip(f"perf_analyzer cannot load its libraries ({probe.stderr.strip()}): run `make system-deps`")
    return path, env


def test_perf_analyzer_over_http_and_grpc(binary: tuple[Path, dict], tmp_path: Path) -> None:
    path, env = binary
    with run_server(ROOT / "models", "--model", "digits", "--poll-interval", "0", log_dir=tmp_path, grpc=True) as s:
        for protocol, port in (("http", s.port), ("grpc", s.grpc_port)):
            cmd = [
                str(path), "-m", "digits", "-u", f"127.0.0.1:{port}", "-i", protocol, "--concurrency-range", "2",
                "--measurement-interval", "1000", "--stability-percentage", "999", "--max-trials", "3",
            ]  # fmt: skip
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            (rate,) = perf_analyzer.throughputs(done.stdout)
            assert rate > 0
            # it read our statistics extension: the server-side section is filled in
            assert "Successful request count" in done.stdout and "compute infer" in done.stdout
