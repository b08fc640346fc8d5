"""The generated alert rules: promtool accepts them, and promtool's rule unit tests show each alert
kind firing on series that breach and staying quiet on series that do not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.compile import alerts, promql
from mesh.spec import load_spec, validate_spec
from services.common.telemetry import HTTP_DURATION
from services.modelserver.metrics import REQUEST_DURATION

SPEC = load_spec(check_repository=False)
INFER = "/v2/models/digits/infer"
CLASSIFY = "/v1/digits:classify"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (make system-deps)"
)


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return alerts.write_rules(SPEC, tmp_path_factory.mktemp("rules") / "rules.yml")


@needs_promtool
def test_promtool_accepts_the_rules(rules_file: Path) -> None:
    result = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_burn_factors_follow_the_sre_workbook_for_30_days() -> None:
    slo = SPEC.slo_for(INFER)
    assert slo.window == 30 * 86400
    assert [alerts.burn_factor(slo, b) for b in alerts.BURN_WINDOWS] == [14.4, 6.0, 3.0, 1.0]


def test_every_slo_and_every_served_version_has_alerts() -> None:
    rules = [r for g in alerts.rule_groups(SPEC) for r in g["rules"]]
    for slo in SPEC.slos:
        kinds = {
            (r["alert"], r["labels"].get("quantile"))
            for r in rules
            if r.get("labels", {}).get("route") == slo.route and "alert" in r
        }
        assert kinds == {
            ("MeshserveErrorBudgetBurn", None),
            ("MeshserveLatencyBudgetBurn", "0.95"),
            ("MeshserveLatencyBudgetBurn", "0.99"),
            ("MeshserveSLIMissing", None),
        }, slo.route
    down = {r["labels"]["service"] for r in rules if r.get("alert") == "MeshserveModelVersionDown"}
    assert down == {f"{m}-v{v}" for m, ms in SPEC.models.items() for v, vs in ms.versions.items() if vs.replicas}


def _bounds(histogram) -> set[float]:
    """A histogram's finite bucket bounds: services.common.leanmetrics' (public) or prometheus_client's."""
    return set(getattr(histogram, "bounds", None) or histogram._upper_bounds)


@pytest.mark.parametrize("histogram", [HTTP_DURATION, REQUEST_DURATION], ids=lambda h: h.describe()[0].name)
def test_every_slo_bound_is_a_bucket_of_the_workload_histograms(histogram) -> None:
    """The latency SLIs count requests under the bound: a missing bucket would read as no data."""
    missing = [b for b in alerts.slo_bucket_bounds(SPEC) if b not in _bounds(histogram)]
    assert not missing, f"add {missing} to LATENCY_BUCKETS (services/common/telemetry.py)"


def test_slis_are_read_at_the_serving_workload() -> None:
    """A pipeline route from its business API's HTTP metrics, a model route from its model servers;
    never from the embedded gateway, which a cluster does not run."""
    classify, infer = promql.route_sli(SPEC, CLASSIFY), promql.route_sli(SPEC, INFER)
    assert (classify.requests, classify.selector) == (
        "meshserve_http_requests_total",
        'service="digits-classify",route="/v1/digits:classify"',
    )
    assert (infer.requests, infer.selector, infer.failed) == (
        "meshserve_inference_requests_total",
        'model="digits"',
        'outcome=~"error|rejected|timeout"',
    )
    for rule in (r for g in alerts.rule_groups(SPEC) for r in g["rules"]):
        assert "gateway" not in rule["expr"], rule
    with pytest.raises(ValueError, match="neither a pipeline route"):
        promql.route_sli(SPEC, "/v2/models/nope/infer")


def test_effective_replicas_decide_the_availability_alerts() -> None:
    """A version overridden to 0 gets none; the Degraded threshold is the effective minimum."""

    def availability(replicas: dict[tuple[str, int], int]) -> dict[tuple[str, str], str]:
        (group,) = [g for g in alerts.rule_groups(SPEC, replicas) if g["name"] == "meshserve-availability"]
        return {(r["alert"], r["labels"]["service"]): r["expr"] for r in group["rules"]}

    dev = availability({("digits", 1): 1, ("resnet", 1): 0})
    assert not [key for key in dev if key[1] == "resnet-v1"]
    assert ("MeshserveModelVersionDegraded", "digits-v1") not in dev  # one replica: Down says it all
    assert dev[("MeshserveModelVersionDown", "digits-v1")].endswith("< 1")
    prod = availability({("digits", 1): 3})
    assert prod[("MeshserveModelVersionDegraded", "digits-v1")].endswith("< 3")
    assert availability({}) == availability(
        {(m, v): vs.replicas for m, ms in SPEC.models.items() for v, vs in ms.versions.items()}
    )


def test_a_spec_without_slos_still_gets_availability_alerts() -> None:
    spec = validate_spec({"models": {"m": {"versions": {1: {"replicas": 1}}}}})
    groups = alerts.rule_groups(spec)
    assert [g["name"] for g in groups] == ["meshserve-availability"]
    assert groups[0]["rules"][0]["labels"]["service"] == "m-v1"


# --------------------------------------------------------------------------- promtool test rules


def _expected(groups: list[dict[str, Any]], alertname: str, **labels: str) -> list[dict[str, Any]]:
    """The alert instances a rule with these labels produces (labels and annotations as promtool wants)."""
    found = []
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == alertname and all(rule["labels"].get(k) == v for k, v in labels.items()):
                found.append({"exp_labels": dict(rule["labels"]), "exp_annotations": dict(rule["annotations"])})
    assert found, (alertname, labels)
    return found


CLASSIFY_SEL = f'service="digits-classify",route="{CLASSIFY}"'
HTTP, INF = "meshserve_http_request_duration_seconds", "meshserve_inference_request_duration_seconds"


def _healthy(route: str, n: int = 120) -> list[tuple[str, str]]:
    """A route's workload series with every answer fast and successful."""
    grow = f"0+100x{n}"
    if route == INFER:
        return [
            ('meshserve_inference_requests_total{model="digits",version="1",outcome="success"}', grow),
            (f'{INF}_bucket{{model="digits",version="1",le="0.025"}}', grow),
            (f'{INF}_bucket{{model="digits",version="1",le="0.1"}}', grow),
            (f'{INF}_count{{model="digits",version="1"}}', grow),
        ]
    return [
        (f'meshserve_http_requests_total{{{CLASSIFY_SEL},method="POST",code="200"}}', grow),
        (f'{HTTP}_bucket{{{CLASSIFY_SEL},le="0.05"}}', grow),
        (f'{HTTP}_bucket{{{CLASSIFY_SEL},le="0.15"}}', grow),
        (f"{HTTP}_count{{{CLASSIFY_SEL}}}", grow),
    ]


def _up(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(f'up{{service="{s}",instance="{s}-{i}"}}', "1x120") for s, count in counts.items() for i in range(count)]


def _series() -> list[dict[str, str]]:
    """Two hours at 1 sample/min, as the workloads export them. The infer route fails 1 request in 11
    (v2 sheds them: 503 `rejected`, summed over versions) with every answer under 25 ms; the classify
    route never fails (its 400s and the readiness probe's 503s are not its failures) but 90% of its
    answers take over 150 ms. digits-v1 has one of its two replicas up, digits-v2 and resnet-v1 none."""
    n = 120
    v1, v2 = 'model="digits",version="1"', 'model="digits",version="2"'
    series = [
        (f'meshserve_inference_requests_total{{{v1},outcome="success"}}', f"0+100x{n}"),
        (f'meshserve_inference_requests_total{{{v2},outcome="rejected"}}', f"0+10x{n}"),
        (f'meshserve_http_requests_total{{{CLASSIFY_SEL},method="POST",code="200"}}', f"0+100x{n}"),
        (f'meshserve_http_requests_total{{{CLASSIFY_SEL},method="POST",code="400"}}', f"0+5x{n}"),
        (
            'meshserve_http_requests_total{service="digits-classify",route="/ready",method="GET",code="503"}',
            f"0+50x{n}",
        ),
    ]
    for le in ("0.025", "0.05", "0.1", "0.15", "+Inf"):
        series.append((f'{INF}_bucket{{{v1},le="{le}"}}', f"0+100x{n}"))
        series.append((f'{INF}_bucket{{{v2},le="{le}"}}', f"0+10x{n}"))
        series.append((f'{HTTP}_bucket{{{CLASSIFY_SEL},le="{le}"}}', f"0+{100 if le == '+Inf' else 10}x{n}"))
    series.append((f"{INF}_count{{{v1}}}", f"0+100x{n}"))
    series.append((f"{INF}_count{{{v2}}}", f"0+10x{n}"))
    series.append((f"{HTTP}_count{{{CLASSIFY_SEL}}}", f"0+100x{n}"))
    series.append(('up{service="digits-v1",instance="digits-v1-0"}', f"1x{n}"))
    series.append(('up{service="digits-v1",instance="digits-v1-1"}', f"0x{n}"))
    return [{"series": s, "values": v} for s, v in series]


@needs_promtool
def test_promtool_unit_tests_fire_and_stay_quiet(rules_file: Path, tmp_path: Path) -> None:
    groups = alerts.rule_groups(SPEC)
    at = "90m"
    kinds = (
        "MeshserveErrorBudgetBurn",
        "MeshserveLatencyBudgetBurn",
        "MeshserveModelVersionDown",
        "MeshserveModelVersionDegraded",
        "MeshserveSLIMissing",
    )
    cases = [
        # fires: errors on the infer route, in all four windows (the ratio is constant and high)
        ("MeshserveErrorBudgetBurn", _expected(groups, "MeshserveErrorBudgetBurn", route=INFER)),
        # fires: slow answers on classify for both the p95 and the p99 budget, all windows
        ("MeshserveLatencyBudgetBurn", _expected(groups, "MeshserveLatencyBudgetBurn", route=CLASSIFY)),
        # fires: one of two digits-v1 replicas down; digits-v2 and resnet-v1 have none
        ("MeshserveModelVersionDegraded", _expected(groups, "MeshserveModelVersionDegraded", service="digits-v1")),
        (
            "MeshserveModelVersionDown",
            _expected(groups, "MeshserveModelVersionDown", service="digits-v2")
            + _expected(groups, "MeshserveModelVersionDown", service="resnet-v1"),
        ),
        ("MeshserveSLIMissing", []),  # both routes' series exist
    ]
    missing = _expected(groups, "MeshserveSLIMissing", route=INFER)
    for alert in missing:  # absent() keeps the selector's equality matchers as labels
        alert["exp_labels"]["model"] = "digits"
    tests = [
        {
            "interval": "1m",
            "input_series": _series(),
            "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": exp} for name, exp in cases],
        },
        {
            # quiet: the same rules over healthy series (no errors, all fast, every replica up)
            "interval": "1m",
            "input_series": [
                {"series": s, "values": v}
                for s, v in [
                    *_healthy(INFER),
                    *_healthy(CLASSIFY),
                    *_up({"digits-v1": 2, "digits-v2": 1, "resnet-v1": 1}),
                ]
            ],
            "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": []} for name in kinds],
        },
        {
            # the guard: the model servers' series are gone (a broken scrape), classify still reports
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in _healthy(CLASSIFY)],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "MeshserveSLIMissing", "exp_alerts": []},  # pending, `for: 10m`
                {"eval_time": at, "alertname": "MeshserveSLIMissing", "exp_alerts": missing},
                {"eval_time": at, "alertname": "MeshserveErrorBudgetBurn", "exp_alerts": []},
            ],
        },
    ]
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
