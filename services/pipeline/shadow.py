"""Mirroring on the business route: the pipeline's model call, shadowed on the spec's mirror version.

The embedded gateway mirrors and compares only what passes through it to a model (`/v2/...`). A
pipeline route (`/v1/digits:classify`) reaches the model from the business API, so without this the
route users actually call gave canary analysis no comparison at all. Here, after the primary model
call answered, a share (`traffic.mirror.percentage`) of calls sends the same input tensor to the
mirror version's own service in the background, and the top-1 class of each row is compared with the
primary's: `meshserve_pipeline_mirror_agreement_total` (the labels of the gateway's counter, so
mesh/compile/promql.py sums both). The caller never waits for the mirror; at most MAX_IN_FLIGHT
shadows run at once (the rest are counted `dropped`), so memory stays bounded under load.

Only where the business API picks the version itself (MESHSERVE_TRAFFIC=client, the local stack): in
mesh mode Istio's VirtualService mirrors, fire and forget, without comparing.

It also exports the configured split (`meshserve_pipeline_traffic_weight_ratio`), so the console and
the canary dashboard can draw the observed split against the weights the spec asks for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter, Gauge

from services.common import metric_names as names

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256

MIRROR_REQUESTS = Counter(
    names.PIPELINE_MIRROR_REQUESTS,
    "Model calls of a pipeline shadowed on the mirror version, by outcome: ok, error, dropped (too many in flight).",
    ["model", "version", "outcome"],
)
MIRROR_AGREEMENT = Counter(
    names.PIPELINE_MIRROR_AGREEMENT,
    "Rows of a pipeline's mirrored model call whose top-1 class matched (agree=true) the primary version's or not.",
    ["model", "primary", "mirror", "agree"],
)
TRAFFIC_WEIGHT = Gauge(
    names.PIPELINE_TRAFFIC_WEIGHT,
    "The spec's traffic weight of each model version (0..1) as the business API applies it.",
    ["model", "version"],
)


class _Route(Protocol):
    name: str
    split_versions: tuple[int, ...]
    cumulative: tuple[int, ...]
    mirror_version: int | None
    mirror_fraction: float
    services: Any


class _Plan(Protocol):
    model: _Route


class _Call(Protocol):
    version: int | None


Infer = Callable[[Any, Any, np.ndarray], Awaitable[tuple[np.ndarray, int]]]


def top1(output: np.ndarray) -> np.ndarray:
    """Top-1 class per row (first axis = batch); a 1-D output is one row."""
    if output.ndim <= 1:
        return output.reshape(1, -1).argmax(axis=1)
    return output.reshape(output.shape[0], -1).argmax(axis=1)


def compare(primary: np.ndarray, mirror: np.ndarray) -> tuple[int, int]:
    """(rows that agree, rows that disagree); a shape mismatch disagrees on every primary row."""
    a, b = top1(primary), top1(mirror)
    if a.shape != b.shape:
        return 0, int(a.size)
    same = int(np.count_nonzero(a == b))
    return same, int(a.size) - same


def weights(route: _Route) -> dict[int, float]:
    """Version -> configured share (0..1), zero for versions out of the split."""
    shares = dict.fromkeys(route.services, 0.0)
    previous = 0
    total = route.cumulative[-1] if route.cumulative else 0
    for version, cumulative in zip(route.split_versions, route.cumulative, strict=True):
        shares[version] = (cumulative - previous) / total if total else 0.0
        previous = cumulative
    return shares


class Shadow:
    """Mirrors the model calls of one business API. `infer(plan, call, tensor)` is the runner's own
    model call (same client, retries and timeouts as the primary's)."""

    def __init__(self, infer: Infer) -> None:
        self.infer = infer
        self.tasks: set[asyncio.Task] = set()
        self._plan: object | None = None
        self._exported: set[tuple[str, str]] = set()  # weight gauges this process set

    def after_model(self, plan: _Plan, call: _Call, tensor: np.ndarray, output: np.ndarray) -> None:
        """Called once the primary answered; returns at once (the shadow runs in the background)."""
        route = plan.model
        if plan is not self._plan:  # a new spec snapshot: export its weights (and drop removed versions')
            self._plan = plan
            current = {(route.name, str(v)): share for v, share in weights(route).items()}
            for labels in self._exported - current.keys():
                TRAFFIC_WEIGHT.remove(*labels)
            for labels, share in current.items():
                TRAFFIC_WEIGHT.labels(*labels).set(share)
            self._exported = set(current)
        mirror = route.mirror_version
        if call.version is None or mirror is None or mirror == call.version or mirror not in route.services:
            return
        if random.random() >= route.mirror_fraction:
            return
        if len(self.tasks) >= MAX_IN_FLIGHT:
            MIRROR_REQUESTS.labels(route.name, str(mirror), "dropped").inc()
            return
        shadow_call = dataclasses.replace(
            call,  # type: ignore[type-var]
            service=route.services[mirror],
            base_path=f"/v2/models/{route.name}/versions/{mirror}",
            version=mirror,
        )
        run = self._run(plan, shadow_call, route.name, call.version, tensor, output)
        task = asyncio.get_running_loop().create_task(run)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self, plan: _Plan, call: Any, model: str, primary: int, tensor: np.ndarray, primary_output: np.ndarray
    ) -> None:
        mirror = str(call.version)
        try:
            output, _ = await self.infer(plan, call, tensor)
        except Exception as exc:  # UpstreamError, business.py's StageFailed: for a shadow, all the same error
            MIRROR_REQUESTS.labels(model, mirror, "error").inc()
            log.debug("mirror of %s to v%s failed: %s", model, mirror, exc)
            return
        MIRROR_REQUESTS.labels(model, mirror, "ok").inc()
        same, different = compare(primary_output, output)
        if same:
            MIRROR_AGREEMENT.labels(model, str(primary), mirror, "true").inc(same)
        if different:
            MIRROR_AGREEMENT.labels(model, str(primary), mirror, "false").inc(different)

    async def close(self) -> None:
        """Cancel the shadows still running (shutdown: nobody waits for them)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
