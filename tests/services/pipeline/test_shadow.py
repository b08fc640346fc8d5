"""The business API's mirror (services/pipeline/shadow.py): who is shadowed, how answers compare, what is
counted, and that shadows stay bounded. The live path (real processes, Prometheus, `canary advance` on the
business route) is tests/mesh/test_canary_analysis.py::test_business_route_traffic_alone_is_judged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.pipeline import shadow
from services.pipeline.shadow import Shadow, compare, top1, weights


@dataclass(frozen=True)
class Route:
    name: str = "digits"
    split_versions: tuple[int, ...] = (1, 2)
    cumulative: tuple[int, ...] = (90, 100)
    mirror_version: int | None = 2
    mirror_fraction: float = 1.0
    services: dict[int, str] = field(default_factory=lambda: {1: "digits-v1", 2: "digits-v2", 3: "digits-v3"})


@dataclass(frozen=True)
class Plan:
    model: Route


@dataclass(frozen=True)
class Call:
    service: str
    base_path: str
    headers: dict[str, str]
    version: int | None


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_top1_per_row_and_comparison() -> None:
    a = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=np.float32)
    b = np.array([[0.2, 0.8], [0.1, 0.9], [0.4, 0.6]], dtype=np.float32)
    assert top1(a).tolist() == [1, 0, 1]
    assert compare(a, b) == (2, 1)
    assert compare(a, b[:2]) == (0, 3), "a shape mismatch disagrees on every primary row"
    assert top1(np.array([0.1, 0.7, 0.2])).tolist() == [1]


def test_configured_weights_from_the_route() -> None:
    assert weights(Route()) == {1: 0.9, 2: pytest.approx(0.1), 3: 0.0}
    assert weights(Route(split_versions=(2,), cumulative=(100,))) == {1: 0.0, 2: 1.0, 3: 0.0}


def _run(route: Route, call: Call, infer, n: int = 1) -> Shadow:
    async def go() -> Shadow:
        mirror = Shadow(infer)
        for _ in range(n):
            mirror.after_model(Plan(route), call, np.zeros((2, 4), np.float32), np.eye(2, 10, dtype=np.float32))
        await asyncio.sleep(0)
        await asyncio.gather(*mirror.tasks, return_exceptions=True)
        return mirror

    return asyncio.run(go())


def test_the_mirror_version_gets_the_same_input_and_the_answers_are_compared() -> None:
    seen: list[tuple[Call, np.ndarray]] = []

    async def infer(plan, call, tensor):
        seen.append((call, tensor))
        return np.eye(2, 10, dtype=np.float32)[::-1], call.version  # rows swapped: row 0 -> class 1

    before = {a: _count("meshserve_pipeline_mirror_agreement_total", model="x", primary="1", mirror="2", agree=a)
              for a in ("true", "false")}  # fmt: skip
    _run(Route(name="x"), Call("digits-v1", "/v2/models/x/versions/1", {}, 1), infer)
    ((call, tensor),) = seen
    assert (call.service, call.base_path, call.version) == ("digits-v2", "/v2/models/x/versions/2", 2)
    assert tensor.shape == (2, 4)
    after = {a: _count("meshserve_pipeline_mirror_agreement_total", model="x", primary="1", mirror="2", agree=a)
             for a in ("true", "false")}  # fmt: skip
    assert after["false"] - before["false"] == 2 and after["true"] == before["true"]
    assert _count("meshserve_pipeline_traffic_weight_ratio", model="x", version="1") == 0.9


@pytest.mark.parametrize(
    ("route", "version"),
    [
        (Route(mirror_version=None), 1),  # no mirror configured
        (Route(), 2),  # the primary already is the mirror version
        (Route(mirror_fraction=0.0), 1),  # percentage 0
        (Route(), None),  # mesh mode: Istio picked the version and mirrors itself
    ],
)
def test_nothing_is_shadowed_when_the_spec_or_the_mode_says_no(route: Route, version: int | None) -> None:
    calls: list[Call] = []

    async def infer(plan, call, tensor):
        calls.append(call)
        return tensor, call.version

    _run(route, Call("digits", "/v2/models/digits", {}, version), infer)
    assert calls == []


def test_failures_are_counted_and_shadows_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shadow, "MAX_IN_FLIGHT", 3)

    async def infer(plan, call, tensor):
        raise RuntimeError("mirror answered 500")

    labels = {"model": "bounded", "version": "2"}
    errors = _count("meshserve_pipeline_mirror_requests_total", outcome="error", **labels)
    dropped = _count("meshserve_pipeline_mirror_requests_total", outcome="dropped", **labels)
    _run(Route(name="bounded"), Call("digits-v1", "/p", {}, 1), infer, n=5)
    assert _count("meshserve_pipeline_mirror_requests_total", outcome="error", **labels) - errors == 3
    assert _count("meshserve_pipeline_mirror_requests_total", outcome="dropped", **labels) - dropped == 2


def test_the_exported_weights_follow_the_spec() -> None:
    async def infer(plan, call, tensor):
        return tensor, call.version

    async def go() -> None:
        mirror = Shadow(infer)
        call = Call("w-v1", "/p", {}, 1)
        tensors = (np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32))
        mirror.after_model(Plan(Route(name="w", mirror_version=None)), call, *tensors)
        assert _count("meshserve_pipeline_traffic_weight_ratio", model="w", version="3") == 0.0
        smaller = Route(name="w", mirror_version=None, split_versions=(1,), cumulative=(100,), services={1: "w-v1"})
        mirror.after_model(Plan(smaller), call, *tensors)  # v2 and v3 left the spec

    asyncio.run(go())
    assert _count("meshserve_pipeline_traffic_weight_ratio", model="w", version="1") == 1.0
    assert REGISTRY.get_sample_value("meshserve_pipeline_traffic_weight_ratio", {"model": "w", "version": "2"}) is None
