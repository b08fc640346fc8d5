"""Short, bounded, headless Locust runs against the real local stack (one stack for the module):
the SLO gate passes a met SLO and fails an impossible one, and the x-model-version split check
passes the configured 90/10 split and fails against weights the stack does not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.report import read_history
from mesh.canary import apply_to_file, set_weights
from services.local.supervisor import LocalStack
from tests.observability.livestack import REPO, copy_spec, observed_stack

pytestmark = pytest.mark.timeout(240)
LENIENT = {"LOADTEST_SLO_P95": "2s", "LOADTEST_SLO_P99": "4s", "LOADTEST_SLO_MIN_THROUGHPUT": "5"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("loadtest")
    with observed_stack(tmp / "run", copy_spec(tmp), prometheus=False) as running:
        yield running


def run_locust(stack: LocalStack, out: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    """`python -m loadtests run` as a user would type it: 4 users capped at 10 requests/s each."""
    command = [
        sys.executable, "-m", "loadtests", "run",
        "--host", stack.url("gateway"), "--spec", str(stack.spec_path), "--out", str(out),
        "--users", "4", "--rps-per-user", "10", *args,
    ]  # fmt: skip
    full_env = {**os.environ, "MESHSERVE_API_KEY": stack.env["MESHSERVE_API_KEY"], **(env or {})}
    done = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120)
    verdicts = json.loads((out / "verdicts.json").read_text())
    return done.returncode, verdicts, done.stdout + done.stderr


def test_request_bodies_are_built_before_the_run_starts() -> None:
    """Locust imports the locustfile before its clock starts; the users' first on_start must find them ready."""
    code = "import loadtests.locustfile, loadtests.payloads as p; print(p.digit_images.cache_info().currsize)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "LOADTEST_SUITE": "classify"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def _failed(verdicts: dict) -> list[str]:
    return [v["check"] for v in verdicts["verdicts"] if not v["passed"]]


def test_met_slo_passes_with_the_configured_split_and_writes_reports(stack: LocalStack, tmp_path: Path) -> None:
    code, verdicts, output = run_locust(
        stack, tmp_path, "--suite", "classify", "--shape", "step", "--duration", "6s", env=LENIENT
    )
    assert code == 0, output
    assert _failed(verdicts) == [] and verdicts["passed"]
    figures = verdicts["figures"]
    assert figures["requests"] >= 40 and figures["failures"] == 0
    assert sum(verdicts["versions"].values()) == figures["requests"]  # every answer said which version
    assert {"split v1", "split v2"} <= {v["check"] for v in verdicts["verdicts"]}
    assert "SLO gate: PASS" in output
    for report in ("locust_stats.csv", "locust_stats_history.csv", "report.html", "latency.png"):
        assert (tmp_path / report).stat().st_size > 0, report
    assert "will be ignored" not in output and "no impact on LoadShapes" not in output  # all options used
    assert max(u for u in read_history(tmp_path / "locust_stats_history.csv")["users"] if u) == 4  # --users: peak
    assert '<section id="slo-gate">' in (tmp_path / "report.html").read_text()
    throughput = next(v for v in verdicts["verdicts"] if v["check"] == "throughput")
    assert "offered" in throughput["observed"]  # 4 users x 10 req/s: judged against what was offered


def test_impossible_slo_fails_the_run(stack: LocalStack, tmp_path: Path) -> None:
    env = {**LENIENT, "LOADTEST_SLO_P95": "0.001ms"}
    code, verdicts, output = run_locust(stack, tmp_path, "--suite", "infer-binary", "--duration", "3s", env=env)
    assert code != 0, output
    assert _failed(verdicts) == ["p95 latency"]
    assert "SLO gate: FAIL (p95 latency)" in output


def test_direct_json_inference_passes(stack: LocalStack, tmp_path: Path) -> None:
    code, verdicts, output = run_locust(
        stack, tmp_path, "--suite", "infer-json", "--shape", "spike", "--duration", "4s", env=LENIENT
    )
    assert code == 0, output
    assert verdicts["route"] == "/v2/models/digits/infer" and verdicts["figures"]["failures"] == 0


def test_split_check_fails_when_the_stack_does_not_run_the_expected_weights(stack: LocalStack, tmp_path: Path) -> None:
    """The stack runs 90/10; a spec saying 10/90 must fail the split check (and only that)."""
    expected = copy_spec(tmp_path)
    apply_to_file(expected, lambda doc: set_weights(doc, "digits", {2: 90}))
    out = tmp_path / "out"
    command_env = {**LENIENT}
    code, verdicts, output = run_locust(
        stack, out, "--suite", "infer-json", "--duration", "4s", "--spec", str(expected), env=command_env
    )
    assert code != 0, output
    assert _failed(verdicts) == ["split v1", "split v2"], verdicts["verdicts"]
