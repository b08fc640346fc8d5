"""The dashboards: current with their builder, well-formed for Grafana, every variable fillable."""

from __future__ import annotations

import pytest

from observability import build_dashboards
from observability.dashboards import load_dashboards, panel_queries
from tests.observability.livestack import VARIABLES

REQUIRED = {
    "service-overview.json",
    "model-serving.json",
    "canary-comparison.json",
    "gateway.json",
    "cluster-edge.json",
    "gpu-dcgm.json",
}


def test_files_are_what_the_builder_writes() -> None:
    on_disk = {name: build_dashboards.DASHBOARD_DIR.joinpath(name).read_text() for name in build_dashboards.render()}
    assert on_disk == build_dashboards.render(), "run `python -m observability.build_dashboards`"


def test_the_dashboards_exist_with_unique_uids() -> None:
    dashboards = load_dashboards()
    assert set(dashboards) >= REQUIRED
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_panels_have_queries_ids_and_positions(name: str) -> None:
    dashboard = load_dashboards()[name]
    panels = dashboard["panels"]
    assert panels
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]
    declared = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in declared


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_variable_substitutes(name: str) -> None:
    for title, expr in panel_queries(load_dashboards()[name], VARIABLES):
        assert "$" not in expr, (title, expr)


def test_an_unknown_variable_is_named() -> None:
    with pytest.raises(KeyError, match=r"\$model"):
        panel_queries(load_dashboards()["model-serving.json"], {})


def test_slo_dashboards_read_the_workloads_not_the_local_gateway() -> None:
    """A cluster runs no embedded gateway: the service overview and the canary comparison (mirror
    panels aside, which only the local gateway feeds) must be built on the workloads' series."""
    dashboards = load_dashboards()
    for name in ("service-overview.json", "canary-comparison.json"):
        for title, expr in panel_queries(dashboards[name], VARIABLES):
            if "mirror" not in title.lower():
                assert "meshserve_gateway_" not in expr, (name, title)
    overview = [expr for _, expr in panel_queries(dashboards["service-overview.json"], VARIABLES)]
    assert any(
        'meshserve_http_requests_total{service="digits-classify",route="/v1/digits:classify"' in e for e in overview
    )
    assert any('meshserve_inference_requests_total{model="digits"}' in e for e in overview)
    assert "local stack" in dashboards["gateway.json"]["title"]
