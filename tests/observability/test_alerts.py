"""The generated alert rules: promtool accepts them, and promtool's rule unit tests show each alert
kind firing on series that breach and staying quiet on series that do not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.spec import load_spec, validate_spec
from observability import alerts
from services.gateway.metrics import DURATION

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
        }, slo.route
    down = {r["labels"]["service"] for r in rules if r.get("alert") == "MeshserveModelVersionDown"}
    assert down == {f"{m}-v{v}" for m, ms in SPEC.models.items() for v, vs in ms.versions.items() if vs.replicas}


def test_every_slo_bound_is_a_bucket_of_the_gateway_histogram() -> None:
    """The latency SLIs count requests under the bound: a missing bucket would read as no data."""
    buckets = set(DURATION._upper_bounds)
    missing = [b for b in alerts.slo_bucket_bounds(SPEC) if b not in buckets]
    assert not missing, f"add {missing} to meshserve_gateway_request_duration_seconds buckets"


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


def _series() -> list[dict[str, str]]:
    """Two hours at 1 sample/min. The infer route fails 1 request in 11 (a fast burn) with every answer
    under 25 ms; the classify route never fails but 90% of its answers take over 150 ms. digits-v1 has
    one of its two replicas up, digits-v2 and resnet-v1 none."""
    n = 120
    infer = f'route="{INFER}",upstream="digits",version="1"'
    classify = f'route="{CLASSIFY}",upstream="digits-classify"'
    series = [
        (f'meshserve_gateway_requests_total{{{infer},code="200"}}', f"0+100x{n}"),
        (f'meshserve_gateway_requests_total{{{infer},code="503"}}', f"0+10x{n}"),
        (f'meshserve_gateway_requests_total{{{classify},version="1",code="200"}}', f"0+100x{n}"),
    ]
    for le in ("0.025", "0.05", "0.1", "0.15", "+Inf"):
        series.append(
            (
                f'meshserve_gateway_request_duration_seconds_bucket{{route="{INFER}",upstream="digits",le="{le}"}}',
                f"0+110x{n}",
            )
        )
        slow = le == "+Inf"
        series.append(
            (
                f'meshserve_gateway_request_duration_seconds_bucket{{{classify},le="{le}"}}',
                f"0+{100 if slow else 10}x{n}",
            )
        )
    series.append(
        (f'meshserve_gateway_request_duration_seconds_count{{route="{INFER}",upstream="digits"}}', f"0+110x{n}")
    )
    series.append((f"meshserve_gateway_request_duration_seconds_count{{{classify}}}", f"0+100x{n}"))
    series.append(('up{service="digits-v1",instance="digits-v1-0"}', f"1x{n}"))
    series.append(('up{service="digits-v1",instance="digits-v1-1"}', f"0x{n}"))
    return [{"series": s, "values": v} for s, v in series]


@needs_promtool
def test_promtool_unit_tests_fire_and_stay_quiet(rules_file: Path, tmp_path: Path) -> None:
    groups = alerts.rule_groups(SPEC)
    at = "90m"
    healthy = f'route="{INFER}",upstream="digits"'
    histogram, grow = "meshserve_gateway_request_duration_seconds", "0+100x120"
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
    ]
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
                {"series": f'meshserve_gateway_requests_total{{{healthy},version="1",code="200"}}', "values": grow},
                {"series": f'{histogram}_bucket{{{healthy},le="0.025"}}', "values": grow},
                {"series": f'{histogram}_bucket{{{healthy},le="0.1"}}', "values": grow},
                {"series": f"{histogram}_count{{{healthy}}}", "values": grow},
                *(
                    {"series": f'up{{service="{s}",instance="{s}-{i}"}}', "values": "1x120"}
                    for s, count in (("digits-v1", 2), ("digits-v2", 1), ("resnet-v1", 1))
                    for i in range(count)
                ),
            ],
            "alert_rule_test": [
                {"eval_time": at, "alertname": name, "exp_alerts": []}
                for name in (
                    "MeshserveErrorBudgetBurn",
                    "MeshserveLatencyBudgetBurn",
                    "MeshserveModelVersionDown",
                    "MeshserveModelVersionDegraded",
                )
            ],
        },
    ]
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
