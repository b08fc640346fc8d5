"""The gateway as a raw ASGI app: its lifespan, its own v2 endpoints, and its policy chain.

Raw ASGI (no framework, no pydantic) because every microsecond here is added to every request. What a
request goes through is services.gateway.chain: key-auth, rate limits, routing, version split, body
limit, mirroring, proxying, response filtering and metrics, each a small policy in one ordered list;
`handle` only runs it. The policy snapshot (services.gateway.policy) is immutable and replaced in one
assignment when mesh.yaml changes, so a request in flight finishes under the snapshot it started with.

`x-model-version` names the version that answered, or would have: on every answer for a v2 model
route once a version is chosen (the upstream's own header, else the chosen version), including the
gateway's 413 and 503s/504s for that version (e.g. a dead canary's 503 names the canary). It is
absent where no version was chosen: 401, 429, routing 400/404s, and pipeline routes unless their
upstream sets it.

The public port serves routes only: /metrics and health are on the status port
(services.gateway.status). A changed mesh.yaml is followed by services.common.specfollow (after a
settle time), never applied when it would lock everyone out by accident (services.gateway.reload).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from services.common.client import Client, Discovery
from services.common.errors import error_body
from services.common.routing import ModelRoute
from services.common.specfollow import POLL_S, SpecFollower
from services.gateway import metrics, protocol
from services.gateway.bodylimit import MAX_BODY_BYTES
from services.gateway.chain import Chain, gateway_chain, respond
from services.gateway.exchange import JSON, Exchange
from services.gateway.mirror import Mirror
from services.gateway.policy import Policy, build_policy
from services.gateway.ratelimit import RateLimiter
from services.gateway.reload import SETTLE_S, TRAFFIC_WINDOW_S, refusal

log = logging.getLogger(__name__)


class Gateway:
    """The ASGI callable; `policy` is the snapshot in force, `chain` what each request runs through."""

    def __init__(
        self,
        spec_path: str | Path,
        discovery: Discovery,
        *,
        environ: Mapping[str, str] | None = None,
        poll_interval: float = POLL_S,
        settle: float = SETTLE_S,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.spec_path = Path(spec_path)
        self.discovery = discovery
        self.environ = os.environ if environ is None else environ
        self.last_request = -TRAFFIC_WINDOW_S  # perf_counter of the latest request (is traffic flowing?)
        self.max_body_bytes = max_body_bytes
        self.follower = SpecFollower(
            self.spec_path,
            lambda spec: build_policy(spec, self.environ),
            self._apply,
            guard=self._refusal,
            on_outcome=metrics.count_spec_reload,
            poll_interval=poll_interval,
            settle=settle,
        )
        self.policy: Policy = self.follower.initial()
        self.limiter = RateLimiter()  # shared with the gRPC listener (services.gateway.grpc_proxy)
        self.client: Client | None = None
        self.chain: Chain | None = None

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self.handle(scope, receive, send)
            except Exception:
                log.exception("gateway failure on %s %s", scope.get("method"), scope.get("path"))
                with contextlib.suppress(Exception):
                    await respond(send, 502, [JSON], error_body("bad gateway: internal gateway error"))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        self.client = Client(self.discovery, events=metrics.GatewayEvents())
        self.client.start()
        self.chain = gateway_chain(self.client, limiter=self.limiter, max_body_bytes=self.max_body_bytes)
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
        if self.chain is not None:
            self.chain.of(Mirror).close()
        if self.client is not None:
            await self.client.close()

    # ------------------------------------------------------------------ one request

    def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        """The chain's run for this request (returned, not awaited here: one coroutine less per request)."""
        start = self.last_request = time.perf_counter()
        if scope["path"] in protocol.OWN_PATHS:  # the gateway's own v2 health and metadata, not a route
            status, own = protocol.own_answer(scope["path"], self.policy, self._has_host)
            return respond(send, status, [JSON], own)
        assert self.chain is not None, "the gateway is used before its lifespan startup"
        return self.chain.run(Exchange.from_asgi(scope, receive, self.policy, start), send)

    def _has_host(self, route: ModelRoute, version: int) -> bool:
        """Whether a version of a route has a host in rotation (discovery listed, not ejected)."""
        if self.client is None:
            return False
        upstream = self.client.upstream(route.services[version], route.resilience)
        return any(not host.ejected for host in upstream.pool.hosts)

    # ------------------------------------------------------------------ live spec reload

    def _apply(self, policy: Policy) -> None:
        self.policy = policy  # one assignment: requests in flight keep the snapshot they started with

    def _refusal(self, policy: Policy) -> str | None:
        flowing = time.perf_counter() - self.last_request < TRAFFIC_WINDOW_S
        return refusal(self.policy, policy, flowing)

    async def reload(self) -> bool:
        """Re-validate mesh.yaml now and swap the policy; False when the old one stays (invalid, refused)."""
        return await self.follower.reload() == "applied"
