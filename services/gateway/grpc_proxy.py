"""The gateway's v2 gRPC listener: key-auth, rate limits, version split, override and retries for
`inference.GRPCInferenceService`, forwarding the caller's bytes without decoding the tensors.

Messages stay bytes end to end (grpc's generic handlers, no (de)serializer): only the model name and
version (fields 1 and 2 of every model-level request) are read off the wire. The policy is the HTTP
gateway's snapshot (same keys in metadata, same limiter, same routes), so both protocols enforce
one spec, and the same policy units of the chain (services.gateway.chain) decide: key-auth, the rate
limit and the version choice, after `GrpcRoute` has read the route off the message. A version's gRPC
address is its discovery endpoint's host with the `grpc_port` meta the local stack and the Kubernetes
endpoints table publish. Unversioned metadata, readiness and config
go to one fixed version (services.gateway.protocol), as over HTTP. Streams, the repository and
shared memory are not offered through the gateway (UNIMPLEMENTED).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from services.common.errors import HTTPError
from services.common.routing import ModelRoute
from services.gateway import metrics, protocol
from services.gateway.exchange import Exchange, GatewayError
from services.gateway.keyauth import KeyAuth
from services.gateway.ratelimit import RateLimit
from services.gateway.route import VersionChoice

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
FORWARDED = ("ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig", "ModelStatistics")
REST_OF = {"ModelInfer": "infer", "ModelMetadata": "", "ModelReady": "ready", "ModelConfig": "config"}
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_RETRIABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
_DISCOVERY_TTL = 1.0


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def name_and_version(message: bytes) -> tuple[str, str]:
    """Fields 1 and 2 (strings) of a protobuf message, jumping over everything else (tensors included)."""
    found: dict[int, str] = {}
    offset = 0
    while offset < len(message) and len(found) < 2:
        key, offset = _varint(message, offset)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, offset = _varint(message, offset)
            if offset + length > len(message):
                raise ValueError("length runs past the message")
            if number in (1, 2):
                found[number] = message[offset : offset + length].decode("utf-8")
            offset += length
        elif wire == 0:
            _, offset = _varint(message, offset)
        elif wire == 1:
            offset += 8
        elif wire == 5:
            offset += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return found.get(1, ""), found.get(2, "")


def _encode_string(number: int, value: str) -> bytes:
    data = value.encode()
    return _varint_bytes(number << 3 | 2) + _varint_bytes(len(data)) + data


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class GrpcRoute:
    """Access phase for gRPC: the model, version and method tail off the message (not a path)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.rest = REST_OF.get(method, "stats")

    def access(self, ex: Exchange) -> None:
        try:
            model, path_version = name_and_version(ex.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise GatewayError(400, f"malformed {self.method} request: {exc}") from None
        ex.model, ex.path_version, ex.rest = model, path_version or None, self.rest
        ex.model_route = ex.policy.models.get(model)


class GrpcProxy:
    """The listener's handlers; `gateway` is the HTTP gateway whose policy, limiter and discovery it shares."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.key_auth = KeyAuth()
        self.rate_limit = RateLimit(gateway.limiter)
        self.version_choice = VersionChoice()
        self.channels: dict[str, grpc.aio.Channel] = {}
        self._targets: dict[str, tuple[float, list[str]]] = {}
        self._rr = 0

    # ------------------------------------------------------------ own answers

    async def server_live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"\x08\x01"  # ServerLiveResponse{live: true}

    async def server_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        status, _ = protocol.own_answer("/v2/health/ready", self.gateway.policy, self.gateway._has_host)
        return b"\x08\x01" if status == 200 else b""

    async def server_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return _encode_string(1, protocol.NAME) + _encode_string(2, protocol.VERSION)

    # ------------------------------------------------------------ forwarded

    def forward(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        steps = self.access(method)

        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._forward(method, steps, request, context)

        return handler

    def access(self, method: str) -> tuple[Callable[[Exchange], None], ...]:
        """The access phase of a forwarded method: the HTTP chain's policies, the route off the message."""
        return (self.key_auth.access, self.rate_limit.access, GrpcRoute(method).access, self.version_choice.access)

    async def _forward(
        self,
        method: str,
        steps: tuple[Callable[[Exchange], None], ...],
        request: bytes,
        context: grpc.aio.ServicerContext,
    ) -> bytes:
        start = time.perf_counter()
        headers = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        ex = Exchange(self.gateway.policy, start, "", method, headers)
        ex.body = request
        try:
            for step in steps:
                step(ex)
        except HTTPError as exc:
            await self._refuse(context, _STATUS.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message, start)
        route, version, service = ex.model_route, ex.version, ex.service
        assert route is not None
        credentials = ex.credentials
        outgoing = [(k, v) for k, v in headers.items() if k not in credentials]
        outgoing = [(k, v) for k, v in outgoing if not k.startswith((":", "grpc-")) and k not in ("te", "content-type")]
        outgoing.append(("x-consumer-username", ex.consumer))
        label = route.route_labels.get(ex.rest, route.route_labels[""])
        code, details, reply = await self._call(service, method, request, outgoing, route, context)
        metrics.requests(label, service, str(version), f"grpc-{code.name}").inc()
        metrics.duration(label, service).observe(time.perf_counter() - start)
        context.set_trailing_metadata((("x-model-version", str(version)),))
        if code != grpc.StatusCode.OK:
            await context.abort(code, details)
        return reply

    async def _call(
        self,
        service: str,
        method: str,
        request: bytes,
        metadata: list[tuple[str, str]],
        route: ModelRoute,
        context: grpc.aio.ServicerContext,
    ) -> tuple[grpc.StatusCode, str, bytes]:
        """Try the version's hosts in turn, retrying on UNAVAILABLE as the route's resilience allows."""
        resilience = route.resilience
        attempts = 1 + resilience.retries.attempts
        per_try = resilience.retries.per_try_timeout or resilience.timeout
        remaining = context.time_remaining()
        deadline = time.monotonic() + min(resilience.timeout, remaining if remaining is not None else 1e9)
        targets = await self._hosts(service)
        if not targets:
            return grpc.StatusCode.UNAVAILABLE, f"no healthy upstream for {service} (gRPC)", b""
        code, details = grpc.StatusCode.UNAVAILABLE, ""
        for attempt in range(attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                return grpc.StatusCode.DEADLINE_EXCEEDED, f"{service}: route timeout of {resilience.timeout}s", b""
            self._rr += 1
            target = targets[(self._rr + attempt) % len(targets)]
            call = self._channel(target).unary_unary(f"/{SERVICE}/{method}")
            try:
                reply = await call(request, timeout=min(per_try, left), metadata=metadata)
                return grpc.StatusCode.OK, "", reply
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
                if code not in _RETRIABLE:
                    return code, details, b""
                metrics.RETRIES.labels(service).inc()
        return code, details, b""

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self.channels.get(target)
        if channel is None:
            limit = self.gateway.max_body_bytes
            options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
            channel = self.channels[target] = grpc.aio.insecure_channel(target, options=options)
        return channel

    async def _hosts(self, service: str) -> list[str]:
        """host:grpc_port of a service's endpoints (discovery meta `grpc_port`), cached for a second."""
        now = time.monotonic()
        cached = self._targets.get(service)
        if cached is not None and now - cached[0] < _DISCOVERY_TTL:
            return cached[1]
        try:
            endpoints = await asyncio.to_thread(self.gateway.discovery.endpoints, service)
        except Exception:
            log.exception("discovery lookup of %s failed", service)
            return cached[1] if cached else []
        targets = [f"{e.host}:{e.meta['grpc_port']}" for e in endpoints if e.meta.get("grpc_port")]
        self._targets[service] = (now, targets)
        return targets

    async def _refuse(
        self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, start: float
    ) -> None:
        metrics.requests("grpc", "", "", f"grpc-{code.name}").inc()
        metrics.duration("grpc", "").observe(time.perf_counter() - start)
        await context.abort(code, message)

    # ------------------------------------------------------------ server

    def handlers(self) -> grpc.GenericRpcHandler:
        methods = {
            "ServerLive": grpc.unary_unary_rpc_method_handler(self.server_live),
            "ServerReady": grpc.unary_unary_rpc_method_handler(self.server_ready),
            "ServerMetadata": grpc.unary_unary_rpc_method_handler(self.server_metadata),
        }
        for method in FORWARDED:
            methods[method] = grpc.unary_unary_rpc_method_handler(self.forward(method))
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


class WithGrpc:
    """ASGI wrapper: the gateway app, plus its gRPC listener started and stopped with its lifespan."""

    def __init__(self, app: Any, gateway: Any, host: str, port: int) -> None:
        self.app = app
        self.gateway = gateway
        self.host = host
        self.port = port
        self.server: grpc.aio.Server | None = None
        self.proxy: GrpcProxy | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def sending(message: dict) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.start()
            await send(message)

        async def receiving() -> dict:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.stop()
            return message

        await self.app(scope, receiving, sending)

    async def start(self) -> None:
        limit = self.gateway.max_body_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        self.server = grpc.aio.server(options=options)
        self.proxy = GrpcProxy(self.gateway)
        self.server.add_generic_rpc_handlers((self.proxy.handlers(),))
        if self.server.add_insecure_port(f"{self.host}:{self.port}") == 0:
            raise OSError(f"gRPC could not bind {self.host}:{self.port}")
        await self.server.start()
        log.info("gateway gRPC listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(5.0)
        if self.proxy is not None:
            await self.proxy.close()
