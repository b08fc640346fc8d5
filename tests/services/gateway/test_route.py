"""RouteMatch and VersionChoice alone (services/gateway/route.py)."""

from __future__ import annotations

import pytest

from services.common.routing import RouteError
from services.gateway.exchange import UNMATCHED
from services.gateway.route import NoRoute, RouteMatch, VersionChoice
from tests.services.gateway.exchanges import PIPELINE_ROUTE, exchange, snapshot

POLICY = snapshot()


def routed(path: str, headers: dict[str, str] | None = None, draw: float = 0.0):
    ex = exchange(POLICY, path, headers)
    RouteMatch().access(ex)
    VersionChoice(lambda: draw).access(ex)
    return ex


def test_a_model_route_gets_its_label_error_key_and_a_version_by_the_split() -> None:
    ex = routed("/v2/models/digits/infer", draw=0.0)
    assert (ex.route_label, ex.error_key, ex.version, ex.service) == (
        "/v2/models/digits/infer",
        "error",
        1,
        "digits-v1",
    )
    assert ex.chosen == ((b"x-model-version", b"1"),)
    assert routed("/v2/models/digits/infer", draw=0.95).version == 2  # 90/10
    assert routed("/v2/models/digits/versions/2/infer").version == 2
    assert routed("/v2/models/digits/infer", {"x-model-version": "v2"}).version == 2


def test_a_pipeline_route_goes_to_its_service_with_kongs_error_key() -> None:
    ex = routed(PIPELINE_ROUTE)
    assert (ex.route_label, ex.error_key, ex.service, ex.chosen) == (PIPELINE_ROUTE, "message", "digits-classify", ())


def test_no_route_is_404_under_a_bounded_label() -> None:
    ex = exchange(POLICY, "/v2/models/nope/infer")
    RouteMatch().access(ex)
    assert (ex.route_label, ex.error_key) == (UNMATCHED, "error")
    with pytest.raises(NoRoute, match="unknown model 'nope'; known models: digits") as caught:
        VersionChoice().access(ex)
    assert caught.value.status == 404
    ex = exchange(POLICY, "/random/path")
    RouteMatch().access(ex)
    assert (ex.route_label, ex.error_key) == (UNMATCHED, "message")
    with pytest.raises(NoRoute, match="no Route matched"):
        VersionChoice().access(ex)


def test_a_version_nobody_serves_is_refused_before_any_upstream() -> None:
    with pytest.raises(RouteError) as caught:
        routed("/v2/models/digits/versions/7/infer")
    assert caught.value.status == 404
    with pytest.raises(RouteError) as caught:
        routed("/v2/models/digits/infer", {"x-model-version": "banana"})
    assert caught.value.status == 400
