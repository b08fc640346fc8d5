"""The gateway as a raw ASGI app: key-auth, rate limits, routing, version split, mirroring, proxying.

Raw ASGI (no framework, no pydantic) because every microsecond here is added to every request:
header pairs are decoded once, bodies and upstream headers pass through as bytes, and the
policy is an immutable snapshot (services.gateway.policy) replaced in one assignment when
mesh.yaml changes, so a request in flight finishes under the snapshot it started with.

Request bodies are counted while they are read (chunked ones have no Content-Length to check), and
one over `max_body_bytes` is refused with 413 before anything goes upstream.

`x-model-version` names the version that answered, or would have: on every answer for a v2 model
route once a version is chosen (the upstream's own header, else the chosen version), including the
gateway's 413 and 503s/504s for that version (e.g. a dead canary's 503 names the canary). It is
absent where no version was chosen: 401, 429, routing 400/404s, and pipeline routes unless their
upstream sets it.

The public port serves routes only: /metrics and health are on the status port
(services.gateway.status). What goes upstream and back is filtered by services.gateway.headers
(hop-by-hop fields, every credential location); a changed mesh.yaml is applied as
services.gateway.reload says (after a settle time, never one that locks everyone out by accident).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.spec import SpecError, load_spec
from services.common.asgi import BodyTooLarge, ClientGone, read_body
from services.common.client import Client, Discovery, Reply, UpstreamError
from services.common.errors import ProtocolError, error_body
from services.common.routing import ModelRoute, RouteError
from services.common.v2wire import HEADER_LENGTH
from services.gateway import metrics, protocol
from services.gateway.agreement import agreement, top1
from services.gateway.headers import passed_back, upstream_headers
from services.gateway.keyauth import Unauthorized, authenticate
from services.gateway.policy import PipelineRoute, Policy, build_policy, split_model_path
from services.gateway.ratelimit import RateLimiter
from services.gateway.reload import SETTLE_S, TRAFFIC_WINDOW_S, refusal

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
UNMATCHED = "unmatched"  # the route label of paths that match no route (never the raw path)
MAX_MIRRORS_IN_FLIGHT = 256
_JSON = (b"content-type", b"application/json")


class Gateway:
    """The ASGI callable; `policy` is the snapshot in force, `client` the shared upstream client."""

    def __init__(
        self,
        spec_path: str | Path,
        discovery: Discovery,
        *,
        environ: Mapping[str, str] | None = None,
        poll_interval: float = 0.5,
        settle: float = SETTLE_S,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.spec_path = Path(spec_path)
        self.discovery = discovery
        self.environ = os.environ if environ is None else environ
        self.poll_interval = poll_interval
        self.settle = settle
        self.last_request = -TRAFFIC_WINDOW_S  # perf_counter of the latest request (is traffic flowing?)
        self.max_body_bytes = max_body_bytes
        self.policy: Policy = build_policy(load_spec(self.spec_path), self.environ)
        self.limiter = RateLimiter()
        self.client: Client | None = None
        self._mirrors: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self.handle(scope, receive, send)
            except Exception:
                log.exception("gateway failure on %s %s", scope.get("method"), scope.get("path"))
                with contextlib.suppress(Exception):
                    await _respond(send, 502, [_JSON], error_body("bad gateway: internal gateway error"))
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
        self._watcher = asyncio.get_running_loop().create_task(self._watch_spec())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in list(self._mirrors):
            task.cancel()
        if self.client is not None:
            await self.client.close()

    # ------------------------------------------------------------------ one request

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = self.last_request = time.perf_counter()
        path: str = scope["path"]
        policy = self.policy
        if path in protocol.OWN_PATHS:  # the gateway's own v2 health and metadata
            status, own = protocol.own_answer(path, policy, self._has_host)
            await _respond(send, status, [_JSON], own)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request_id = headers.get("x-request-id") or os.urandom(16).hex()
        extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode("latin-1"))]

        # The route first (dict lookups only), so that every answer is counted under a bounded label.
        model_route: ModelRoute | None = None
        pipeline: PipelineRoute | None = None
        if path.startswith("/v2/models/"):
            model, path_version, rest = split_model_path(path)
            model_route = policy.models.get(model)
            route_label = model_route.route_labels.get(rest, model_route.route_labels[""]) if model_route else UNMATCHED
        else:
            pipeline = policy.pipelines.get(path)
            route_label = path if pipeline is not None else UNMATCHED
        error_key = "error" if model_route is not None or path.startswith("/v2/") else "message"

        try:
            consumer, query, credentials = authenticate(policy, headers, scope.get("query_string", b""))
        except Unauthorized as exc:
            await _refuse(send, 401, extra, "message", str(exc), route_label, start)
            return

        limits = policy.limits.get(consumer)
        if limits:
            verdict = self.limiter.check(consumer, limits, time.time())
            extra.extend(verdict.headers)
            if not verdict.allowed:
                metrics.RATE_LIMITED.labels(consumer).inc()
                await _refuse(send, 429, extra, "message", "API rate limit exceeded", route_label, start)
                return

        # Direct v2 model access (split across versions) or a pipeline's business API.
        version = 0
        if model_route is not None:
            try:
                header = headers.get(model_route.header_name)
                version = protocol.choose_version(model_route, path_version, header, rest, random.random())
            except RouteError as exc:
                await _refuse(send, exc.status, extra, error_key, exc.message, route_label, start)
                return
            service, resilience = model_route.services[version], model_route.resilience
        elif pipeline is not None:
            service, resilience = pipeline.service, pipeline.resilience
        elif path.startswith("/v2/models/"):
            message = f"unknown model {model!r}; known models: {', '.join(sorted(policy.models))}"
            await _refuse(send, 404, extra, error_key, message, route_label, start)
            return
        else:
            await _refuse(send, 404, extra, error_key, "no Route matched with those values", route_label, start)
            return

        # Answers from here on name the chosen version (an upstream's own x-model-version wins).
        chosen = [(b"x-model-version", str(version).encode())] if model_route is not None else []
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            message = f"request body of {declared} bytes is over the gateway's limit of {limit}"
            await _refuse(send, 413, [*extra, *chosen], error_key, message, route_label, start)
            return
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            message = f"request body is over the gateway's limit of {limit} bytes"
            await _refuse(send, 413, [*extra, *chosen], error_key, message, route_label, start)
            return
        except ClientGone:
            return  # nobody to answer, and a truncated body must not go upstream
        outgoing = upstream_headers(headers, credentials)
        outgoing["x-request-id"] = request_id
        outgoing["x-consumer-username"] = consumer
        target = scope.get("raw_path") or path.encode()
        target = (target + b"?" + query if query else target).decode("latin-1")
        method: str = scope["method"]

        mirror_future: asyncio.Future | None = None
        if (
            model_route is not None
            and model_route.mirror_version not in (None, version)
            and random.random() < model_route.mirror_fraction
        ):
            mirror_future = self._mirror(model_route, version, method, target, body, outgoing, rest == "infer")

        assert self.client is not None, "the gateway is used before its lifespan startup"
        upstream = self.client.upstream(service, resilience)
        reply: Reply | None = None
        try:
            reply = await upstream.request(method, target, body=body, headers=outgoing)
        except UpstreamError as exc:
            response_headers = [_JSON, *extra, *chosen]
            if exc.retry_after:
                response_headers.append((b"retry-after", str(exc.retry_after).encode()))
            status, payload = exc.status, error_body(exc.message, error_key)
            answered_version = str(version) if model_route is not None else ""
        finally:
            if mirror_future is not None and not mirror_future.done():
                mirror_future.set_result(reply)
        if reply is not None:
            status, payload = reply.status, reply.body
            response_headers, answered_version = passed_back(reply.raw_headers, extra)
            if (
                model_route is not None
                and status == 200
                and protocol.is_unversioned_metadata(method, rest, path_version, model_route.header_name in headers)
            ):
                served = protocol.served_versions(policy, model_route.name)
                payload = protocol.all_versions_metadata(payload, served)
            if not answered_version and model_route is not None:
                answered_version = str(version)
                response_headers.extend(chosen)
        await _respond(send, status, response_headers, payload)
        metrics.requests(route_label, service, answered_version, str(status)).inc()
        metrics.duration(route_label, service).observe(time.perf_counter() - start)

    def _has_host(self, route: ModelRoute, version: int) -> bool:
        """Whether a version of a route has a host in rotation (discovery listed, not ejected)."""
        if self.client is None:
            return False
        upstream = self.client.upstream(route.services[version], route.resilience)
        return any(not host.ejected for host in upstream.pool.hosts)

    # ------------------------------------------------------------------ mirroring

    def _mirror(
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
        if len(self._mirrors) >= MAX_MIRRORS_IN_FLIGHT:
            metrics.MIRROR_REQUESTS.labels(route.name, str(mirror), "dropped").inc()
            return None
        loop = asyncio.get_running_loop()
        primary_reply: asyncio.Future = loop.create_future()
        target = target.replace(f"/versions/{primary}/", f"/versions/{mirror}/", 1)
        task = loop.create_task(
            self._shadow(route, primary, mirror, method, target, body, dict(headers), compare, primary_reply)
        )
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)
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
        assert self.client is not None
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

    # ------------------------------------------------------------------ live spec reload

    def _spec_identity(self) -> tuple[int, int, int] | None:
        try:
            stat = self.spec_path.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    async def reload(self) -> bool:
        """Re-validate mesh.yaml and swap the policy in one assignment; an invalid file changes nothing,
        nor does one that would lock every consumer out or drop every route while traffic flows."""
        try:
            spec = await asyncio.to_thread(load_spec, self.spec_path)
        except SpecError as exc:
            log.error("mesh spec change ignored, the previous spec stays in force: %s", exc)
            metrics.SPEC_RELOADS.labels("invalid").inc()
            return False
        policy = build_policy(spec, self.environ)
        flowing = time.perf_counter() - self.last_request < TRAFFIC_WINDOW_S
        reason = refusal(self.policy, policy, flowing)
        if reason is not None:
            log.error("mesh spec change refused, the previous spec stays in force: %s", reason)
            metrics.SPEC_RELOADS.labels("refused").inc()
            metrics.SPEC_REFUSED.set(1)
            return False
        self.policy = policy
        metrics.SPEC_RELOADS.labels("applied").inc()
        metrics.SPEC_REFUSED.set(0)
        log.info("mesh spec reloaded from %s", self.spec_path)
        return True

    async def _watch_spec(self) -> None:
        """Apply a change once the file has stayed the same for `settle` seconds (a half-written file
        that an editor or a copy is still writing is never read as the new spec)."""
        seen = self._spec_identity()
        while True:
            await asyncio.sleep(self.poll_interval)
            current = self._spec_identity()
            if current is None or current == seen:
                continue
            while True:  # wait for the writer to finish
                await asyncio.sleep(self.settle)
                settled = self._spec_identity()
                if settled == current:
                    break
                current = settled
            if current is None:
                continue
            seen = current
            try:
                await self.reload()
            except Exception:
                log.exception("mesh spec reload failed; the previous spec stays in force")


async def _refuse(
    send: Any, status: int, headers: list[tuple[bytes, bytes]], key: str, message: str, route: str, start: float
) -> None:
    """Answer a request the gateway itself refuses (no upstream was called) and count it."""
    await _respond(send, status, [_JSON, *headers], error_body(message, key))
    metrics.requests(route, "", "", str(status)).inc()
    metrics.duration(route, "").observe(time.perf_counter() - start)


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
