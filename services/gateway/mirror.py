"""Istio's mirror as a policy of the gateway's chain: a copy to the mirror version, never waited for.

Forward phase: with the route's mirror fraction, a copy of the request goes to the mirror version
(fire and forget; at most `max_in_flight` copies at once, the rest counted as dropped). Response
phase: the primary's reply (None when it gave none) is handed to the copy, which compares the top-1
class of both infer answers (services.gateway.agreement) and counts agreement per row.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from services.common.client import Client, Reply, UpstreamError
from services.common.errors import ProtocolError
from services.common.routing import ModelRoute
from services.common.v2wire import HEADER_LENGTH
from services.gateway import metrics
from services.gateway.agreement import agreement, top1
from services.gateway.exchange import Exchange

log = logging.getLogger(__name__)

MAX_MIRRORS_IN_FLIGHT = 256


class Mirror:
    """Forward phase: start the copy; response phase: hand it the primary's reply."""

    def __init__(
        self, client: Client, draw: Callable[[], float] = random.random, max_in_flight: int = MAX_MIRRORS_IN_FLIGHT
    ) -> None:
        self.client = client
        self.draw = draw
        self.max_in_flight = max_in_flight
        self.in_flight: set[asyncio.Task] = set()

    def forward(self, ex: Exchange) -> None:
        route = ex.model_route
        if route is None or route.mirror_version in (None, ex.version) or self.draw() >= route.mirror_fraction:
            return
        ex.mirror = self.start(route, ex.version, ex.method, ex.target, ex.body, ex.outgoing or {}, ex.rest == "infer")

    def response(self, ex: Exchange) -> None:
        future = ex.mirror
        if future is not None and not future.done():
            future.set_result(ex.reply)

    def start(
        self,
        route: ModelRoute,
        primary: int,
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        compare: bool,
    ) -> asyncio.Future | None:
        """Fire and forget a copy to the mirror version; returns the future to hand the primary's reply to."""
        mirror = route.mirror_version
        assert mirror is not None
        if len(self.in_flight) >= self.max_in_flight:
            metrics.MIRROR_REQUESTS.labels(route.name, str(mirror), "dropped").inc()
            return None
        loop = asyncio.get_running_loop()
        primary_reply: asyncio.Future = loop.create_future()
        target = target.replace(f"/versions/{primary}/", f"/versions/{mirror}/", 1)
        task = loop.create_task(
            self._shadow(route, primary, mirror, method, target, body, dict(headers), compare, primary_reply)
        )
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return primary_reply

    async def _shadow(
        self,
        route: ModelRoute,
        primary: int,
        mirror: int,
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        compare: bool,
        primary_reply: asyncio.Future,
    ) -> None:
        name, mirror_label = route.name, str(mirror)
        try:
            upstream = self.client.upstream(route.services[mirror], route.resilience)
            reply = await upstream.request(method, target, body=body, headers=headers)
        except UpstreamError:
            metrics.MIRROR_REQUESTS.labels(name, mirror_label, "error").inc()
            return
        ok = reply.status < 400
        metrics.MIRROR_REQUESTS.labels(name, mirror_label, "ok" if ok else "error").inc()
        if not (compare and reply.status == 200):
            return
        try:
            answer: Reply | None = await asyncio.wait_for(primary_reply, route.resilience.timeout)
        except TimeoutError:
            return
        if answer is None or answer.status != 200:
            return
        try:
            same, different = agreement(
                top1(answer.body, answer.headers.get(HEADER_LENGTH)),
                top1(reply.body, reply.headers.get(HEADER_LENGTH)),
            )
        except (ProtocolError, ValueError, TypeError) as exc:
            log.warning("mirror comparison of %s v%s against v%s skipped: %s", name, mirror, primary, exc)
            return
        if same:
            metrics.MIRROR_AGREEMENT.labels(name, str(primary), mirror_label, "true").inc(same)
        if different:
            metrics.MIRROR_AGREEMENT.labels(name, str(primary), mirror_label, "false").inc(different)

    def close(self) -> None:
        """Cancel the copies still in flight (the gateway is stopping)."""
        for task in list(self.in_flight):
            task.cancel()
