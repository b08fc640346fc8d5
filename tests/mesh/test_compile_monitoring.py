"""mesh/compile/monitoring.py: ServiceMonitors that find their Services' metrics port, the SLO rules
from mesh/compile/alerts.py as one PrometheusRule, the spec's dashboards (mesh/compile/dashboards.py)
as Grafana sidecar ConfigMaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh.compile import k8s, keda, monitoring
from mesh.compile.alerts import rule_groups
from mesh.compile.dashboards import build
from mesh.compile.settings import Environment, Platform, load_stack
from mesh.spec import DEFAULT_SPEC_PATH, load_spec, read_yaml, validate_spec
from tests.mesh.schemas import validate_builtin, validate_custom

SPEC = load_spec()
ROOT = Path(__file__).resolve().parents[2]  # the Pulumi stack files live at the repository root
CONFIGMAP_LIMIT = 1024 * 1024  # bytes the API server accepts in one ConfigMap


@pytest.mark.parametrize("istio", [True, False])
def test_service_monitors_match_a_service_and_a_named_port(istio: bool) -> None:
    env = Environment(platform=Platform(istio=istio))
    compiled = monitoring.compile_monitoring(SPEC, env)
    services = [o for o in [*k8s.compile_core(SPEC, env), *compiled] if o["kind"] == "Service"]
    monitors = [o for o in compiled if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == 6 + istio  # with Istio, Kong's sidecar too (the cluster-edge dashboard reads it)
    for monitor in monitors:
        validate_custom(monitor)
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [
            s
            for s in services
            if s["metadata"]["namespace"] == monitor["metadata"]["namespace"]
            and selector.items() <= s["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, monitor["metadata"]["name"]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["honorLabels"] is True  # the apps' `service`/`version` labels, as locally
        port = next(p for p in matched[0]["spec"]["ports"] if p["name"] == endpoint["port"])
        if istio:  # istio-agent's merged app + Envoy metrics, outside mTLS
            assert (port["targetPort"], endpoint["path"]) == (15020, "/stats/prometheus")
        else:
            assert (port["targetPort"], endpoint["path"]) == ("http", "/metrics")


def test_prometheus_rule_wraps_the_slo_rule_groups() -> None:
    rule = next(o for o in monitoring.compile_monitoring(SPEC, Environment()) if o["kind"] == "PrometheusRule")
    validate_custom(rule)
    assert rule["spec"]["groups"] == rule_groups(SPEC)  # no overrides: the spec's replicas
    assert len(rule["spec"]["groups"]) >= len(SPEC.slos)


def _availability(env: Environment) -> dict[tuple[str, str], str]:
    rule = next(o for o in monitoring.compile_monitoring(SPEC, env) if o["kind"] == "PrometheusRule")
    validate_custom(rule)
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "meshserve-availability"]
    return {(r["alert"], r["labels"]["service"]): r["expr"] for r in group["rules"]}


def test_dev_stack_alerts_follow_its_replica_overrides() -> None:
    """Pulumi.dev.yaml runs resnet-v1 at 0 (no GPU node) and digits-v1 at 1: no alert for a version that
    runs no pod, and no Degraded alert that a single replica would keep firing."""
    alerts = _availability(load_stack("dev", ROOT))
    assert not [key for key in alerts if key[1] == "resnet-v1"]
    assert alerts[("MeshserveModelVersionDown", "digits-v1")].endswith(" < 1")
    assert ("MeshserveModelVersionDegraded", "digits-v1") not in alerts
    assert ("MeshserveModelVersionDown", "digits-v2") in alerts


def test_prod_stack_degraded_threshold_is_its_minimum() -> None:
    alerts = _availability(load_stack("prod", ROOT))
    assert alerts[("MeshserveModelVersionDegraded", "digits-v1")].endswith(" < 3")  # the stack's 3, not the spec's 2
    assert ("MeshserveModelVersionDown", "resnet-v1") in alerts


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_alert_minimum_is_kedas_min_replica_count(stack: str) -> None:
    env = load_stack(stack, ROOT)
    minimum = monitoring.minimum_replicas(SPEC, env)
    for scaled in keda.compile_keda(SPEC, env):
        labels = scaled["metadata"]["labels"]
        version = int(labels["version"].removeprefix("v"))
        assert minimum[(labels["app"], version)] == scaled["spec"]["minReplicaCount"]


def test_dashboards_become_sidecar_config_maps() -> None:
    maps = [o for o in monitoring.compile_monitoring(SPEC, Environment()) if o["kind"] == "ConfigMap"]
    dashboards = build(SPEC)
    assert len(maps) == len(dashboards) > 0
    for config_map in maps:
        validate_builtin(config_map)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        ((filename, text),) = config_map["data"].items()
        assert json.loads(text) == dashboards[filename]
        assert len(text.encode()) < CONFIGMAP_LIMIT


def _dashboard(spec_doc: dict, filename: str) -> dict:
    objects = monitoring.compile_monitoring(validate_spec(spec_doc), Environment())
    (text,) = [o["data"][filename] for o in objects if o["kind"] == "ConfigMap" and filename in o["data"]]
    return json.loads(text)


def test_the_dashboards_are_the_compiled_specs_own() -> None:
    """The ConfigMaps carry the dashboards of the spec being compiled (its routes, its stable and canary),
    not the repository's demo files: a user's spec gets dashboards of its own routes."""
    doc = read_yaml(DEFAULT_SPEC_PATH)
    route = "/v1/numbers:classify"
    (pipeline,) = doc["pipelines"].values()
    old_route, pipeline["route"] = pipeline["route"], route
    for slo in doc["slos"]:
        slo["route"] = route if slo["route"] == old_route else slo["route"]
    doc["models"]["digits"]["traffic"] = {"weights": {1: 0, 2: 100}, "stable": 2}
    overview = [t["expr"] for p in _dashboard(doc, "service-overview.json")["panels"] for t in p["targets"]]
    assert any(f'route="{route}"' in e for e in overview) and not any(old_route in e for e in overview)
    canary = {v["name"]: v for v in _dashboard(doc, "canary-comparison.json")["templating"]["list"]}
    assert canary["stable"]["current"]["value"] == "2" and canary["canary"]["current"]["value"] == "1"


def test_wrappers_take_whatever_the_generators_provide(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiler wraps the interface, not today's content: a tiny fake flows through unchanged."""
    fake_groups = [{"name": "fake", "rules": [{"alert": "Fake", "expr": "vector(1) > 0"}]}]
    monkeypatch.setattr(monitoring, "rule_groups", lambda spec, replicas=None: fake_groups)
    monkeypatch.setattr(monitoring, "build_dashboards", lambda spec: {"x.json": {"title": "X", "panels": []}})
    objects = monitoring.compile_monitoring(SPEC, Environment())
    assert next(o for o in objects if o["kind"] == "PrometheusRule")["spec"]["groups"] == fake_groups
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"] == "meshserve-dashboard-x"
    assert json.loads(config_map["data"]["x.json"]) == {"title": "X", "panels": []}
