"""One request on its way through the gateway's policy chain: the only object a request allocates.

Each policy (services.gateway.chain) reads what the ones before it wrote here and adds its own part:
the route and its metric label, the consumer, the chosen version and upstream, the body, the headers
that go upstream, the answer. A policy that refuses raises a `GatewayError` (or any
services.common.errors.HTTPError, e.g. the version choice's RouteError); the chain renders it with
`refuse`, the one place a gateway refusal becomes an answer.
"""

from __future__ import annotations

import asyncio
import os
from functools import partial
from operator import itemgetter
from typing import Any

from mesh.spec import Resilience
from services.common.client import Reply
from services.common.errors import HTTPError, error_body
from services.common.routing import ModelRoute
from services.gateway.policy import PipelineRoute, Policy

JSON = (b"content-type", b"application/json")
UNMATCHED = "unmatched"  # the route label of paths that match no route (never the raw path)
NO_VERSION: tuple[tuple[bytes, bytes], ...] = ()
_latin1 = partial(bytes.decode, encoding="latin-1")
_name, _value = itemgetter(0), itemgetter(1)


class GatewayError(HTTPError):
    """A refusal by the gateway itself (no upstream was called).

    `key` is the error body's key: Kong's own plugins (key-auth, rate-limiting) always say `message`;
    None takes the route's (`error` on v2 routes, as the model servers answer; `message` elsewhere).
    """

    key: str | None = None


class Exchange:
    """Per-request state; attributes are filled in chain order (see services.gateway.chain).

    The defaults are class attributes, so a request pays only for what its policies set (a plain
    instance dict: __slots__ would need every one of ~30 attributes assigned per request).
    """

    raw_path = b""
    receive: Any = None  # the ASGI receive callable the body is read from
    query = b""
    model: str | None = None  # the model a /v2/models/ path (or a gRPC message) names
    model_route: ModelRoute | None = None  # a /v2/models/ route
    pipeline: PipelineRoute | None = None  # a pipeline's business route
    path_version: str | None = None
    rest = ""
    route_label = UNMATCHED
    error_key = "message"
    consumer = ""
    credentials: tuple[str, ...] = ()
    version = 0
    chosen = NO_VERSION  # the x-model-version answer header once a version is chosen
    service = ""  # the upstream the route chose
    resilience: Resilience | None = None
    body = b""
    outgoing: dict[str, str] | None = None
    target = ""
    mirror: asyncio.Future | None = None  # hands the primary's reply to a mirrored request
    upstream = ""  # the upstream actually called (metrics); "" while the gateway answers itself
    reply: Reply | None = None  # once the upstream answered
    status = 0
    payload = b""
    response_headers: list[tuple[bytes, bytes]] | None = None
    answered_version = ""

    def __init__(self, policy: Policy, start: float, path: str, method: str, headers: dict[str, str]) -> None:
        self.policy = policy  # the snapshot this request runs under, start to end
        self.start = start
        self.path = path
        self.method = method
        self.headers = headers
        self.request_id = headers.get("x-request-id") or os.urandom(16).hex()
        self.extra: list[tuple[bytes, bytes]] = [(b"x-request-id", self.request_id.encode("latin-1"))]

    @classmethod
    def from_asgi(cls, scope: dict[str, Any], receive: Any, policy: Policy, start: float) -> Exchange:
        """Header pairs decoded once (latin-1; repeated names joined with ", " as RFC 9110 allows)."""
        raw = scope["headers"]
        # in C, no bytecode per field: names and values decoded and zipped into a dict
        headers = dict(zip(map(_latin1, map(_name, raw)), map(_latin1, map(_value, raw)), strict=True))
        if len(headers) != len(raw):  # a repeated name
            headers = {}
            for raw_name, raw_value in raw:
                name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        exchange = cls(policy, start, scope["path"], scope["method"], headers)
        exchange.raw_path = scope.get("raw_path") or b""
        exchange.receive = receive
        exchange.query = scope.get("query_string", b"")
        return exchange

    def refuse(self, exc: HTTPError) -> None:
        """The answer to a refusal: the error body under the right key, the headers gathered so far."""
        key = exc.key if isinstance(exc, GatewayError) and exc.key is not None else self.error_key
        self.status = exc.status
        self.payload = error_body(exc.message, key)
        self.response_headers = [JSON, *self.extra, *self.chosen]
