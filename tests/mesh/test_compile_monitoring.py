"""mesh/compile/monitoring.py: ServiceMonitors that find their Services' metrics port, the SLO rules
from observability/alerts.py as one PrometheusRule, the dashboards as Grafana sidecar ConfigMaps."""

from __future__ import annotations

import json

import pytest

from mesh.compile import k8s, monitoring
from mesh.compile.settings import Environment, Platform
from mesh.spec import load_spec
from observability.alerts import rule_groups
from observability.dashboards import load_dashboards
from tests.mesh.schemas import validate_builtin, validate_custom

SPEC = load_spec()
CONFIGMAP_LIMIT = 1024 * 1024  # bytes the API server accepts in one ConfigMap


@pytest.mark.parametrize("istio", [True, False])
def test_service_monitors_match_a_service_and_a_named_port(istio: bool) -> None:
    env = Environment(platform=Platform(istio=istio))
    services = [o for o in k8s.compile_core(SPEC, env) if o["kind"] == "Service"]
    monitors = [o for o in monitoring.compile_monitoring(SPEC, env) if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == 6
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
    assert rule["spec"]["groups"] == rule_groups(SPEC)
    assert len(rule["spec"]["groups"]) >= len(SPEC.slos)


def test_dashboards_become_sidecar_config_maps() -> None:
    maps = [o for o in monitoring.compile_monitoring(SPEC, Environment()) if o["kind"] == "ConfigMap"]
    dashboards = load_dashboards()
    assert len(maps) == len(dashboards) > 0
    for config_map in maps:
        validate_builtin(config_map)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        ((filename, text),) = config_map["data"].items()
        assert json.loads(text) == dashboards[filename]
        assert len(text.encode()) < CONFIGMAP_LIMIT


def test_wrappers_take_whatever_observability_provides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiler wraps the interface, not today's content: a tiny fake flows through unchanged."""
    import observability.alerts
    import observability.dashboards

    fake_groups = [{"name": "fake", "rules": [{"alert": "Fake", "expr": "vector(1) > 0"}]}]
    monkeypatch.setattr(observability.alerts, "rule_groups", lambda spec: fake_groups)
    monkeypatch.setattr(observability.dashboards, "load_dashboards", lambda: {"x.json": {"title": "X", "panels": []}})
    objects = monitoring.compile_monitoring(SPEC, Environment())
    assert next(o for o in objects if o["kind"] == "PrometheusRule")["spec"]["groups"] == fake_groups
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"] == "meshserve-dashboard-x"
    assert json.loads(config_map["data"]["x.json"]) == {"title": "X", "panels": []}
