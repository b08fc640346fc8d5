"""The SLO gate, the canary split check, the load shapes and the history plot: pure parts."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from loadtests.canary_split import split_verdicts
from loadtests.gate import RunFigures, apply_overrides, evaluate, table
from loadtests.profiles import soak, spike, step
from loadtests.report import add_verdicts_to_html, latency_figure, plot_latency, read_history
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


def _history(tmp_path: Path) -> Path:
    history = tmp_path / "locust_stats_history.csv"
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
    rows = [f"{1000 + i},{i},,Aggregated,{10 * i},{i % 2},{i},0,0,0,0,{2 * i},0,{3 * i},0,0,0" for i in range(1, 6)]
    rows.insert(2, "1002,2,POST,/v1/x,1,0,N/A,0,0,0,0,N/A,0,N/A,0,0,0")  # per-endpoint rows are skipped
    history.write_text("\n".join([header, *rows]) + "\n")
    return history


def test_latency_plot_from_locust_history(tmp_path: Path) -> None:
    series = read_history(_history(tmp_path))
    assert series["t"] == [0, 1, 2, 3, 4] and series["p95"] == [2, 4, 6, 8, 10] and series["rps"][-1] == 50
    assert series["failures"] == [1, 0, 1, 0, 1] and series["users"] == [1, 2, 3, 4, 5]
    png = plot_latency(_history(tmp_path), tmp_path / "latency.png", title="t", slo_ms={"p95": 50})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_reads_at_any_scale_labels_the_slo_and_gives_users_and_failures_their_own_axes(
    tmp_path: Path,
) -> None:
    """The old plot: one linear axis scaled to a 150 ms SLO (2-10 ms curves flat at the bottom), the SLO label
    under the legend, no users or failures."""
    series = read_history(_history(tmp_path))
    fig = latency_figure(series, title="t", slo_ms={"p95": 50.0, "p99": 150.0})
    fig.canvas.draw()
    latency, rate, users, failures = fig.axes
    assert latency.get_yscale() == "log"
    low, high = latency.get_ylim()
    assert low <= 1 and high >= 150  # every curve and both bounds in view, decades apart and readable
    labels = [t.get_text() for t in latency.texts]
    assert labels == ["SLO p95 50 ms", "SLO p99 150 ms"]  # on the lines themselves
    legend = latency.get_legend().get_window_extent()
    assert legend.x0 >= latency.get_window_extent().x1  # beside the plot: it hides no line or label
    assert [ln.get_label() for ln in users.get_lines()] == ["users"]
    assert [ln.get_label() for ln in failures.get_lines()] == ["failures/s"] and failures is not rate
    assert list(failures.get_lines()[0].get_ydata()) == [1, 0, 1, 0, 1]


def test_throughput_is_judged_against_the_offered_load() -> None:
    """A paced 4 x 25 req/s run serving 96.6 req/s "failed" a 100 req/s minimum before."""
    slo = SLO.model_copy(update={"min_throughput": 100})
    paced = RunFigures(2000, 0, 0.01, 0.02, 96.6, offered_rps=100.0)
    assert _failed(evaluate(slo, paced)) == []
    behind = RunFigures(2000, 0, 0.01, 0.02, 60.0, offered_rps=100.0)  # the service did not keep up
    assert _failed(evaluate(slo, behind)) == ["throughput"]
    light = RunFigures(500, 0, 0.01, 0.02, 39.0, offered_rps=40.0)  # cannot show a 100 req/s minimum
    verdict = next(v for v in evaluate(slo, light) if v.check == "throughput")
    assert verdict.skipped and verdict.passed and "not judged" in verdict.observed
    assert "SKIP" in table("gate", [verdict])
    assert _failed(evaluate(slo, RunFigures(2000, 0, 0.01, 0.02, 96.6))) == ["throughput"]  # unpaced: as written


def test_the_verdicts_go_into_the_html_report(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text('<html><head></head><body style="margin:0;"><div id="root"></div></body></html>')
    verdicts = evaluate(SLO, RunFigures(100, 0, 0.2, 0.3, 60, offered_rps=10.0))
    add_verdicts_to_html(
        report,
        {"suite": "classify", "route": "/v1/<x>", "passed": False, "verdicts": [asdict(v) for v in verdicts]},
    )
    text = report.read_text()
    section = text[text.index('<section id="slo-gate">') : text.index("</section>")]
    assert text.index("<section") > text.index("<body") and "SLO gate: classify /v1/&lt;x&gt;: FAIL" in section
    assert section.count('<td class="fail">FAIL</td>') == 2 and '<td class="skip">SKIP</td>' in section
    assert "p95 latency" in section and "200.0ms" in section
