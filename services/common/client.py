"""The one client for calling another meshserve service, with the mesh's resilience policy.

An upstream is a discovery service name (`digits-v1`, `digits-classify-preprocess`, ...). Each
has its own pool of keep-alive connections (`connection_pool.max_connections`), least-request
balancing over its healthy endpoints (power of two choices), Envoy outlier detection
(services.common.upstream), and retries on the spec's `retry_on` conditions with a per-try
timeout inside an overall timeout, on a different endpoint where one exists. More than
`max_pending_requests` waiting for a connection, or no endpoint in rotation, fails at once with
an UpstreamError whose `status` (503) and `retry_after` the caller answers with.

Transport: services.common.http1 (asyncio + httptools), not aiohttp or httpx: measured here,
a small POST at concurrency 32 cost ~19 us of client CPU with it, ~70-88 us with aiohttp 3.14
and several times that with httpx 0.28 (see http1's docstring); the gateway pays it per request.

What counts against a host (outlier detection, as Envoy's `consecutive_5xx` over the host's own
failures): a connect failure, reset or timeout, and a 5xx answer, except two kinds of 5xx a healthy
host gives: a 503 with Retry-After (load shed by admission control, "queue full", or a draining
replica: load, not a fault) and a 5xx naming a failed dependency in `x-meshserve-dependency-failed`
(the business API's answer when one of its stages failed: the host answered, its dependency did
not). Those two are neutral: neither a failure nor a success for the host; they are still retried
under `retry_on`.

Retries are bounded twice: `retries.attempts` per request, and Envoy's retry budget across requests
(at most `budget_percent` of this upstream's active requests may be retries at once, never fewer
than `min_retry_concurrency`), so a slow or overloaded upstream is not sent more work than it got.
Unlike Envoy, a retry after a connect failure or a reset is not held to the budget: no work reached a
live host, and a replica killed under load must cost no client an error however many were in flight.
A request whose try ended with its connection reset is remembered (services.common.quarantine):
once the same request has reset two hosts it is refused (502) instead of crashing a third.

Propagation: x-request-id and W3C trace headers bound with `bind_request_headers()` (a context
variable) are added to every outgoing request unless the caller passes them. When tracing is on
(services.common.tracing), each try is a CLIENT span whose context goes out as `traceparent`;
`add_header_injector(fn)` adds any other propagation to the outgoing header dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, Protocol

import orjson

from services.common import http1, tracing
from services.common.errors import HTTPError
from services.common.quarantine import ResetMemory, fingerprint
from services.common.upstream import EndpointLike, Host, HostPool, OutlierPolicy

log = logging.getLogger(__name__)

PROPAGATED_HEADERS = ("x-request-id", "traceparent", "tracestate")
RETRY_AFTER_SECONDS = 1
# On a 5xx: the answering service names the dependency (stage) that failed; not the host's own failure.
DEPENDENCY_FAILED_HEADER = "x-meshserve-dependency-failed"

_request_headers: ContextVar[Mapping[str, str] | None] = ContextVar("meshserve_request_headers", default=None)
_injectors: list[Callable[[MutableMapping[str, str]], Any]] = []


class RetryPolicy(Protocol):
    @property
    def attempts(self) -> int: ...
    @property
    def per_try_timeout(self) -> float | None: ...
    @property
    def retry_on(self) -> Sequence[str]: ...
    @property
    def budget_percent(self) -> float: ...
    @property
    def min_retry_concurrency(self) -> int: ...


class PoolLimits(Protocol):
    @property
    def max_connections(self) -> int: ...
    @property
    def max_pending_requests(self) -> int: ...


class Resilience(Protocol):
    """What the client reads of a resilience policy (mesh.spec.Resilience fits): the transport takes
    numbers, not the spec's schema, so it runs without mesh.yaml."""

    @property
    def timeout(self) -> float: ...
    @property
    def retries(self) -> RetryPolicy: ...
    @property
    def outlier_detection(self) -> OutlierPolicy: ...
    @property
    def connection_pool(self) -> PoolLimits: ...


def bind_request_headers(incoming: Mapping[str, str]) -> Token:
    """Remember the current request's id and trace headers for every call made while handling it."""
    kept = {name: incoming[name] for name in PROPAGATED_HEADERS if name in incoming}
    return _request_headers.set(kept)


def add_header_injector(inject: Callable[[MutableMapping[str, str]], Any]) -> None:
    """Register a function that writes propagation headers into an outgoing header dict (OTel's inject)."""
    if inject not in _injectors:
        _injectors.append(inject)


# --------------------------------------------------------------------------- errors


class UpstreamError(HTTPError):
    """The upstream gave no answer to pass on; answer `status` (+ Retry-After when set) to the caller."""

    status = 503
    reason = "unavailable"
    retry_after: int | None = RETRY_AFTER_SECONDS

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(type(self).status, f"{service}: {detail}")
        self.service = service


class NoHealthyUpstream(UpstreamError):
    """Every endpoint is ejected or none is registered (Envoy: 'no healthy upstream')."""

    reason = "no_healthy_upstream"


class PendingOverflow(UpstreamError):
    """More requests waiting for a connection than `max_pending_requests` (Envoy: 'overflow')."""

    reason = "pending_overflow"


class UpstreamConnectError(UpstreamError):
    """Connect failure or reset on the last try (Envoy: 'upstream connect error or disconnect/reset')."""

    reason = "connect_failure"


class QueryOfDeath(UpstreamError):
    """The same request reset the connection of too many hosts: refused rather than tried again."""

    status = 502
    reason = "query_of_death"
    retry_after = None


class UpstreamTimeout(UpstreamError):
    """The per-try or overall timeout ran out (Envoy: 'upstream request timeout')."""

    status = 504
    reason = "timeout"
    retry_after = None


# --------------------------------------------------------------------------- results and hooks


class Reply:
    """An upstream's answer, body fully read; `raw_headers` pass through untouched, `headers`
    (lowercase names, case-insensitive lookups) is built on first use."""

    __slots__ = ("_headers", "body", "instance", "raw_headers", "status")

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes, instance: str) -> None:
        self.status = status
        self.raw_headers = raw_headers
        self.body = body
        self.instance = instance
        self._headers: http1.Headers | None = None

    @property
    def headers(self) -> http1.Headers:
        if self._headers is None:
            self._headers = http1.Headers(self.raw_headers)
        return self._headers

    def json(self) -> Any:
        return orjson.loads(self.body)


class ClientEvents(Protocol):
    """What the client reports (the gateway turns these into its metrics)."""

    def retried(self, service: str) -> None: ...
    def ejected(self, service: str, instance: str) -> None: ...
    def readmitted(self, service: str, instance: str) -> None: ...
    def rejected(self, service: str, reason: str) -> None: ...
    def retry_skipped(self, service: str, reason: str) -> None: ...


class NoEvents:
    def retried(self, service: str) -> None:
        return None

    def ejected(self, service: str, instance: str) -> None:
        return None

    def readmitted(self, service: str, instance: str) -> None:
        return None

    def rejected(self, service: str, reason: str) -> None:
        return None

    def retry_skipped(self, service: str, reason: str) -> None:
        return None


class Discovery(Protocol):
    def endpoints(self, service: str) -> list[Any]: ...


# --------------------------------------------------------------------------- retry conditions

_GATEWAY_STATUSES = frozenset({502, 503, 504})
# Failures where the host did no work that a retry would add to (nothing reached it, or it died with the
# request): retried outside the retry budget, so that a replica SIGKILLed under load costs no client an
# error at any concurrency. The budget bounds retries of answered 5xx and timeouts: work on a busy host.
_LOST_WORK = frozenset({"connect-failure", "reset"})


def should_retry(conditions: frozenset[str], *, status: int | None = None, failure: str | None = None) -> bool:
    """Envoy's retry_on: `5xx` covers every 5xx, resets, connect failures and timeouts;
    `gateway-error` 502/503/504 plus those local failures; the narrow ones only themselves."""
    if failure is not None:
        if "5xx" in conditions or "gateway-error" in conditions:
            return True
        if failure == "connect-failure":
            return "connect-failure" in conditions
        if failure == "reset":
            return "reset" in conditions or "refused-stream" in conditions
        return False  # a timeout is retried only under 5xx / gateway-error
    if status is None or status < 500:
        return False
    return "5xx" in conditions or ("gateway-error" in conditions and status in _GATEWAY_STATUSES)


def neutral_5xx(reply: Reply) -> bool:
    """A 5xx that is no failure of the answering host: load shed (503 + Retry-After) or a named dependency."""
    headers = reply.headers
    return (reply.status == 503 and "retry-after" in headers) or DEPENDENCY_FAILED_HEADER in headers


# --------------------------------------------------------------------------- one upstream


class Upstream:
    """One service's endpoints, connection pool and resilience policy."""

    def __init__(self, service: str, resilience: Resilience, events: ClientEvents) -> None:
        self.service = service
        self.events = events
        self.active = 0  # requests inside this upstream (in flight or waiting for a connection)
        self.active_retries = 0  # of those, the ones on a retry (Envoy's retry budget counts these)
        self.quarantine = ResetMemory()
        self.pool = HostPool(
            resilience.outlier_detection,
            on_eject=lambda h: events.ejected(service, h.instance),
            on_readmit=lambda h: events.readmitted(service, h.instance),
        )
        self.connections = http1.Pool(resilience.connection_pool.max_connections)
        self.configure(resilience)

    def configure(self, resilience: Resilience) -> None:
        """Apply a (re)loaded policy in place (retries, timeouts, ejection, pool limits)."""
        self.resilience = resilience
        self.pool.policy = resilience.outlier_detection
        retries = resilience.retries
        self.attempts = 1 + retries.attempts
        self.timeout = resilience.timeout
        self.per_try = retries.per_try_timeout or resilience.timeout
        self.retry_on = frozenset(retries.retry_on)
        self.budget_share = retries.budget_percent / 100.0
        self.min_retries = retries.min_retry_concurrency
        self.max_active = resilience.connection_pool.max_connections + resilience.connection_pool.max_pending_requests
        self.connections.max_connections = resilience.connection_pool.max_connections

    def set_endpoints(self, endpoints: Iterable[EndpointLike]) -> None:
        self.pool.update(endpoints)

    async def close(self) -> None:
        self.connections.close()

    async def request(
        self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Send with retries; returns the last answer (a 5xx too) or raises UpstreamError."""
        if self.active >= self.max_active:
            self.events.rejected(self.service, PendingOverflow.reason)
            raise PendingOverflow(self.service, "too many pending requests (max_pending_requests)")
        outgoing = _outgoing_headers(headers)
        loop_time = time.monotonic
        deadline = loop_time() + self.timeout
        tried: list[Host] = []
        memory = self.quarantine
        key = None
        if memory.active:  # something reset lately: is this request one that did?
            key = fingerprint(method, path, body)
            self._refuse_if_poison(key, memory.hosts(key, loop_time()))
        self.active += 1
        retrying = False
        try:
            for attempt in range(self.attempts):
                now = loop_time()
                host = self.pool.pick(now, tried)
                if host is None:
                    self.events.rejected(self.service, NoHealthyUpstream.reason)
                    raise NoHealthyUpstream(self.service, "no healthy upstream")
                remaining = deadline - now
                if remaining <= 0:
                    raise UpstreamTimeout(self.service, "upstream request timeout")
                last = attempt + 1 == self.attempts
                try_once = self._traced_try if tracing.tracing_enabled() else self._try
                failure, reply = await try_once(host, method, path, body, outgoing, min(self.per_try, remaining))
                failed = failure is not None or reply.status >= 500
                if reply is None or reply.status < 500 or not neutral_5xx(reply):
                    self.pool.record(host, failed, loop_time())
                if failure == "reset":
                    key = key or fingerprint(method, path, body)
                    self._refuse_if_poison(key, memory.reset(key, host.key, loop_time()))
                elif failure is None and memory.active:  # answered: whatever it is, it is no query of death
                    memory.answered(key or fingerprint(method, path, body))
                if not failed:
                    return reply
                if (
                    last
                    or deadline - loop_time() <= 0
                    or not should_retry(self.retry_on, status=None if reply is None else reply.status, failure=failure)
                    or not (retrying or failure in _LOST_WORK or self._retry_allowed())
                ):
                    if reply is not None:
                        return reply
                    if failure == "timeout":
                        raise UpstreamTimeout(self.service, "upstream request timeout")
                    raise UpstreamConnectError(self.service, f"upstream connect error or disconnect/reset ({failure})")
                if not retrying:
                    retrying = True
                    self.active_retries += 1
                tried.append(host)
                self.events.retried(self.service)
            raise AssertionError("unreachable")  # the last attempt always returns or raises
        finally:
            self.active -= 1
            if retrying:
                self.active_retries -= 1

    def _retry_allowed(self) -> bool:
        """Envoy's retry budget: retrying requests at most a share of the active ones (with a floor)."""
        if self.active_retries < max(self.min_retries, self.budget_share * self.active):
            return True
        self.events.retry_skipped(self.service, "retry_budget")
        return False

    def _refuse_if_poison(self, key: object, hosts: int) -> None:
        if hosts < self.quarantine.max_hosts:
            return
        self.events.rejected(self.service, QueryOfDeath.reason)
        ttl = self.quarantine.ttl
        raise QueryOfDeath(
            self.service,
            f"request refused: the same request reset the connection of {hosts} hosts (a possible query of "
            f"death); it is not sent again for {ttl:.0f} s",
        )

    async def _try(
        self, host: Host, method: str, path: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[str | None, Reply | None]:
        """One attempt: (failure kind, None) or (None, the reply)."""
        host.in_flight += 1
        try:
            async with asyncio.timeout(timeout):
                status, raw, data = await self.connections.request(host.host, host.port, method, path, headers, body)
            return None, Reply(status, raw, data, host.instance)
        except TimeoutError:
            return "timeout", None
        except http1.ConnectFailure:
            return "connect-failure", None
        except (http1.ConnectionReset, ConnectionError):
            return "reset", None
        finally:
            host.in_flight -= 1

    async def _traced_try(
        self, host: Host, method: str, path: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[str | None, Reply | None]:
        """`_try` inside a CLIENT span whose context travels as `traceparent` (tracing on only)."""
        from opentelemetry import trace
        from opentelemetry.propagate import inject
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tracer = trace.get_tracer("meshserve.client")
        attributes = {
            "http.request.method": method,
            "url.full": f"{host.base_url}{path}",
            "server.address": host.host,
            "server.port": host.port,
            "peer.service": self.service,
        }
        with tracer.start_as_current_span(f"{method} {path.split('?', 1)[0]}", kind=SpanKind.CLIENT) as span:
            span.set_attributes(attributes)
            outgoing = dict(headers)
            inject(outgoing)
            failure, reply = await self._try(host, method, path, body, outgoing, timeout)
            if reply is not None:
                span.set_attribute("http.response.status_code", reply.status)
                if reply.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            else:
                span.set_status(Status(StatusCode.ERROR, failure or "error"))
            return failure, reply


def _outgoing_headers(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    bound = _request_headers.get()
    if bound is None and not _injectors:
        return headers or {}
    merged = dict(headers or {})
    if bound:
        for name, value in bound.items():
            merged.setdefault(name, value)
    for inject in _injectors:
        inject(merged)
    return merged


# --------------------------------------------------------------------------- the client


class Client:
    """Upstreams by service name, their endpoints kept fresh from discovery.

    Use inside a running event loop: `async with Client(discovery) as client:`, then
    `await client.request("digits-v1", "POST", "/v2/models/digits/infer", resilience=r, body=b)`.
    """

    def __init__(
        self, discovery: Discovery, *, events: ClientEvents | None = None, refresh_interval: float = 0.5
    ) -> None:
        self.discovery = discovery
        self.events = events or NoEvents()
        self.refresh_interval = refresh_interval
        self.upstreams: dict[str, Upstream] = {}
        self._refresher: asyncio.Task | None = None

    async def __aenter__(self) -> Client:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        for upstream in self.upstreams.values():
            await upstream.close()

    def upstream(self, service: str, resilience: Resilience) -> Upstream:
        """The upstream for a service, created on first use; a changed policy is applied in place."""
        upstream = self.upstreams.get(service)
        if upstream is None:
            upstream = Upstream(service, resilience, self.events)
            upstream.set_endpoints(self._lookup(service))
            self.upstreams[service] = upstream
        elif upstream.resilience is not resilience:
            upstream.configure(resilience)
        return upstream

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        resilience: Resilience,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        return await self.upstream(service, resilience).request(method, path, body=body, headers=headers)

    def _lookup(self, service: str) -> list[Any]:
        try:
            return list(self.discovery.endpoints(service))
        except Exception:
            log.exception("discovery lookup of %s failed; keeping its previous endpoints", service)
            existing = self.upstreams.get(service)
            return [] if existing is None else list(existing.pool.hosts)

    async def refresh(self) -> None:
        """Re-read every upstream's endpoints (in a thread: a Consul lookup blocks) and sweep ejections."""
        for service, upstream in list(self.upstreams.items()):
            endpoints = await asyncio.to_thread(self._lookup, service)
            upstream.set_endpoints(endpoints)
            upstream.pool.readmit_due(time.monotonic())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("endpoint refresh failed")
