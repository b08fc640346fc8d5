"""The console's panels are the dashboards' own, with the spec's values in their variables."""

from __future__ import annotations

import pytest

from mesh.compile.dashboards import build
from mesh.spec import load_spec
from observability.console.app import BadQuery, spec_summary, window
from observability.console.panels import PICKS, console_panels, fill, legend, rate_interval, variables


@pytest.fixture(scope="module")
def spec():
    return load_spec(check_repository=False)


def test_every_pick_is_a_panel_of_the_dashboards_with_its_own_queries(spec) -> None:
    dashboards = build(spec)
    panels = console_panels(spec)
    assert len(panels) == len(PICKS)
    for panel, (name, title) in zip(panels, PICKS, strict=True):
        source = next(p for p in dashboards[name]["panels"] if p["title"] == title)
        values = variables(spec, name)
        assert [t.expr for t in panel.targets] == [fill(t["expr"], values) for t in source["targets"]]
        for target in panel.targets:
            assert "$" not in target.expr.replace("$__rate_interval", ""), target.expr


def test_the_panels_users_need_are_there(spec) -> None:
    text = " ".join(t.expr for p in console_panels(spec) for t in p.targets)
    for needed in (
        "meshserve_gateway_requests_total",  # requests by route and version
        "meshserve_pipeline_traffic_weight_ratio",  # the split vs the configured weights, the canary step
        "histogram_quantile(0.99",  # p50/p95/p99
        "meshserve_gateway_rejected_total",  # sheds
        "meshserve_inference_queue_depth",
        "meshserve_inference_exec_count_total",  # batch size
        "meshserve_gateway_ejections_total",
        "mirror_agreement_total",
    ):
        assert needed in text, needed
    canary = [p for p in console_panels(spec) if p.dashboard == "canary-comparison.json"]
    assert len(canary) == 3
    for panel in canary:  # the spec's canary pair: stable v1, canary v2
        assert any('version="2"' in t.expr or 'mirror=~"1|2"' in t.expr for t in panel.targets), panel.title


def test_a_lost_pick_is_named(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("observability.console.panels.PICKS", (("gateway.json", "No such panel"),))
    with pytest.raises(KeyError, match="No such panel"):
        console_panels(spec)


def test_fill_leaves_grafanas_own_variables() -> None:
    assert fill('rate(x{m="$model"}[$__rate_interval])', {"model": "digits"}) == 'rate(x{m="digits"}[$__rate_interval])'
    assert rate_interval(step_s=3, scrape_s=1) == "4s" and rate_interval(step_s=20, scrape_s=5) == "25s"


def test_legends_take_the_series_labels() -> None:
    assert legend("{{route}} v{{version}}", {"route": "/v1/x", "version": "2"}) == "/v1/x v2"
    assert legend("", {"b": "2", "a": "1"}) == "a=1, b=2"
    assert legend("{{upstream}}", {}) == "none so far"  # the `or vector(0)` of a counter with no events yet
    assert legend("v2 configured weight", {}) == "v2 configured weight"


@pytest.mark.parametrize(
    "params", [{"seconds": "abc"}, {"seconds": "5"}, {"seconds": "nan"}, {"seconds": "3600", "step": "1"}]
)
def test_out_of_range_windows_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(BadQuery):
        window(params, now=1000.0, scrape_s=1.0)


def test_the_shipped_uplot_is_the_pinned_one_with_its_license() -> None:
    from observability.console import UPLOT_VERSION
    from observability.console.app import STATIC, STATIC_FILES

    assert all((STATIC / name).is_file() for name in STATIC_FILES)
    banner = f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */"
    assert (STATIC / "uPlot.iife.min.js").read_text().startswith(banner)
    assert "MIT License" in (STATIC / "UPLOT-LICENSE").read_text()
    page = (STATIC / "index.html").read_text()
    assert "http" not in page.replace("http-equiv", ""), "no CDN: the page loads only its own files"


def test_the_spec_summary_names_the_canary_step(spec) -> None:
    digits = next(m for m in spec_summary(spec) if m["model"] == "digits")
    assert digits["stable"] == 1 and digits["canary"] == [{"version": 2, "weight": 10}]
