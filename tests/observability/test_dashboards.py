"""The dashboards: current with their builder, well-formed for Grafana, every variable fillable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from mesh import canary
from mesh.compile.dashboards import SCHEMA_VERSION_RANGE, canary_comparison
from mesh.spec import load_spec, read_yaml
from observability import build_dashboards
from observability.dashboards import DASHBOARD_DIR, load_dashboards, panel_queries
from tests.observability.livestack import REPO, VARIABLES

REQUIRED = {
    "service-overview.json",
    "model-serving.json",
    "canary-comparison.json",
    "gateway.json",
    "cluster-edge.json",
    "gpu-dcgm.json",
}


def test_files_are_what_the_builder_writes() -> None:
    on_disk = {name: DASHBOARD_DIR.joinpath(name).read_text() for name in build_dashboards.render()}
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


# --------------------------------------------------------------------------- Grafana 10 and 11 import

# Panel types built into both Grafana 10 and 11 (no plugin to install).
CORE_PANELS = {"timeseries", "heatmap", "state-timeline", "stat", "table", "bargauge", "text"}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_imports_into_grafana_10_and_11(name: str) -> None:
    """What an import needs: a schema both versions read (older ones are migrated, newer ones are not
    understood by 10.x), a datasource variable every panel and query points at (so the import asks
    for the Prometheus datasource), core panel types, a grid that fits 24 columns without overlaps."""
    d = load_dashboards()[name]
    low, high = SCHEMA_VERSION_RANGE
    assert low <= d["schemaVersion"] <= high, d["schemaVersion"]
    assert 0 < len(d["uid"]) <= 40 and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == ref and v["query"], v
    cells: set[tuple[int, int]] = set()
    for panel in d["panels"]:
        assert panel["type"] in CORE_PANELS, panel["type"]
        assert isinstance(panel.get("options"), dict), f"{panel['title']}: options must be an object"
        assert panel["datasource"] == ref, panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, (panel["title"], pos)
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_the_json_is_grafanas_schema_as_the_sdk_reads_it(name: str) -> None:
    """Parsed by the SDK's own Dashboard model and written again, nothing is lost or renamed."""
    d = load_dashboards()[name]
    assert json.loads(json.dumps(Dashboard.from_json(d), cls=JSONEncoder)) == d


def test_heatmaps_ask_prometheus_for_heatmap_frames() -> None:
    """A bucket query drawn as a heatmap needs `format: heatmap` (de-accumulated `le` series) and no
    re-bucketing by Grafana (`calculate: false`); the latency distribution was missing it."""
    heatmaps = [p for d in load_dashboards().values() for p in d["panels"] if p["type"] == "heatmap"]
    titles = {p["title"] for p in heatmaps}
    assert {"Batch size distribution", "Request latency distribution"} <= titles
    for panel in heatmaps:
        assert panel["options"]["calculate"] is False, panel["title"]
        assert all(t["format"] == "heatmap" and "_bucket" in t["expr"] for t in panel["targets"]), panel["title"]


def _variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_the_canary_dashboard_opens_on_the_specs_stable_and_canary(tmp_path: Path) -> None:
    variables = _variables(load_dashboards()["canary-comparison.json"])
    assert variables["stable"]["current"]["value"] == "1" and variables["canary"]["current"]["value"] == "2"
    assert variables["stable"]["query"] != variables["canary"]["query"], "two variables, not one query twice"
    assert "$stable" in variables["canary"]["query"], "the canary's values leave the stable version out"
    # after `canary promote digits v2` the dashboard follows the spec
    doc = canary.promote(read_yaml(REPO / "mesh" / "mesh.yaml"), "digits", 2)
    path = tmp_path / "mesh.yaml"
    doc["repository"] = str(REPO / "models")
    path.write_text(canary.dump(doc))
    spec = load_spec(path, check_repository=False)
    promoted = _variables(canary_comparison(spec))
    assert promoted["stable"]["current"]["value"] == "2" and promoted["canary"]["current"]["value"] == "1"


def test_routes_are_variables_where_the_series_carry_them() -> None:
    dashboards = load_dashboards()
    for name in ("gateway.json", "service-overview.json"):
        route = _variables(dashboards[name])["route"]
        assert route["includeAll"] and route["current"]["value"] == "$__all", name
        assert route["allValue"] == ".*", "All is every route, also one the variable's query does not list"
    gateway_exprs = [t["expr"] for p in dashboards["gateway.json"]["panels"] for t in p["targets"]]
    assert all('route=~"$route"' in e for e in gateway_exprs if "meshserve_gateway_request" in e)
    by_route = [p for p in dashboards["service-overview.json"]["panels"] if p["title"].endswith("by route")]
    by_route += [p for p in dashboards["service-overview.json"]["panels"] if "by route (" in p["title"]]
    assert len(by_route) == 3
    assert all('"route", "$route")' in t["expr"] for p in by_route for t in p["targets"]), "filtered by $route"
