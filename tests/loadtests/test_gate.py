"""The SLO gate, the canary split check, the load shapes and the history plot: pure parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.canary_split import split_verdicts
from loadtests.gate import RunFigures, apply_overrides, evaluate, table
from loadtests.profiles import soak, spike, step
from loadtests.report import plot_latency, read_history
from mesh.spec import load_spec

SLO = load_spec(check_repository=False).slo_for("/v1/digits:classify")  # p95 50ms, p99 150ms, 0.1%, 50 rps


def _failed(verdicts) -> list[str]:
    return [v.check for v in verdicts if not v.passed]


def test_a_run_within_every_bound_passes() -> None:
    assert _failed(evaluate(SLO, RunFigures(requests=10_000, failures=5, p95_s=0.049, p99_s=0.149, rps=51))) == []


@pytest.mark.parametrize(
    ("figures", "breach"),
    [
        (RunFigures(10_000, 0, 0.051, 0.1, 60), ["p95 latency"]),
        (RunFigures(10_000, 0, 0.04, 0.151, 60), ["p99 latency"]),
        (RunFigures(10_000, 11, 0.04, 0.1, 60), ["error rate"]),
        (RunFigures(10_000, 0, 0.04, 0.1, 49.9), ["throughput"]),
        (RunFigures(0, 0, 0.0, 0.0, 0.0), ["requests", "throughput"]),
    ],
)
def test_each_bound_fails_on_its_own(figures: RunFigures, breach: list[str]) -> None:
    assert _failed(evaluate(SLO, figures)) == breach


def test_overrides_come_from_the_environment_and_show_in_the_table() -> None:
    slo = apply_overrides(SLO, {"LOADTEST_SLO_P95": "0.001ms", "LOADTEST_SLO_MIN_THROUGHPUT": "1"})
    assert slo.p95_latency == pytest.approx(1e-6) and slo.min_throughput == 1 and slo.p99_latency == SLO.p99_latency
    verdicts = evaluate(slo, RunFigures(100, 0, 0.002, 0.003, 5))
    assert _failed(verdicts) == ["p95 latency"]
    text = table("gate", verdicts)
    assert "FAIL" in text and "p95 latency" in text and "2.0ms" in text


def test_no_slo_means_no_failures_allowed() -> None:
    assert _failed(evaluate(None, RunFigures(100, 0, 1.0, 2.0, 1))) == []
    assert _failed(evaluate(None, RunFigures(100, 1, 1.0, 2.0, 1))) == ["failures"]


def test_split_within_binomial_tolerance_passes_and_outside_fails() -> None:
    weights = {1: 90, 2: 10}
    assert _failed(split_verdicts({"1": 905, "2": 95}, weights)) == []  # 1.6 sigma
    assert _failed(split_verdicts({"1": 850, "2": 150}, weights)) == ["split v1", "split v2"]  # 5.3 sigma
    assert _failed(split_verdicts({}, weights)) == ["split v1", "split v2"]  # nothing observed


def test_a_version_without_weight_must_not_answer() -> None:
    assert _failed(split_verdicts({"1": 100, "2": 0}, {1: 100, 2: 0})) == []
    assert _failed(split_verdicts({"1": 100, "2": 1}, {1: 100, 2: 0})) == ["split v1", "split v2"]
    assert _failed(split_verdicts({"1": 100, "3": 1}, {1: 100, 2: 0})) == ["split v1", "split v3"]


def test_shapes() -> None:
    at = [0, 30, 60, 99, 100]
    assert [step(t, 100, 20) for t in at] == [5, 10, 15, 20, None]
    assert [spike(t, 100, 20) for t in (10, 50, 70, 100)] == [4, 20, 4, None]
    assert [soak(t, 100, 20) for t in (0, 99, 100)] == [20, 20, None]


def test_latency_plot_from_locust_history(tmp_path: Path) -> None:
    history = tmp_path / "locust_stats_history.csv"
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
    rows = [f"{1000 + i},{i},,Aggregated,{10 * i},0,{i},0,0,0,0,{2 * i},0,{3 * i},0,0,0" for i in range(1, 6)]
    rows.insert(2, "1002,2,POST,/v1/x,1,0,N/A,0,0,0,0,N/A,0,N/A,0,0,0")  # per-endpoint rows are skipped
    history.write_text("\n".join([header, *rows]) + "\n")
    series = read_history(history)
    assert series["t"] == [0, 1, 2, 3, 4] and series["p95"] == [2, 4, 6, 8, 10] and series["rps"][-1] == 50
    png = plot_latency(history, tmp_path / "latency.png", title="t", slo_ms={"p95": 50})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
