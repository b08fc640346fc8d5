"""Every service's HTTP/1.1 front: uvicorn + httptools with header caps, read timeouts and no trailers.

uvicorn with httptools caps neither the size nor the number of request headers (h11's
`h11_max_incomplete_event_size` applies to the h11 implementation only), arms no timer on a
connection that has not sent its first request, and none while a request's head or body is on
its way: a never-finished 150 MB header, or 3,000 half-sent requests, are held forever and delay
shutdown. `protocol_class(limits)` is uvicorn's httptools protocol with what Envoy and nginx do:

- the request line and headers together at most `max_header_bytes` (Envoy's
  `max_request_headers_kb`, 60 KiB), at most `max_headers` fields (Envoy's `max_headers_count`,
  100): 431 and the connection closed. The bytes a head has buffered in the parser are counted
  while it arrives, so an endless header costs at most the cap plus one socket read.
- a request head must be complete `header_timeout` seconds after its connection opened or its
  first byte arrived (Node's `headersTimeout`); a body must not stall for longer than
  `body_timeout` between two reads (nginx's `client_body_timeout`): 408 and the connection
  closed (silently when not one byte of a request came). A body paused by our own flow control
  (the app is not reading) is not the client's stall.
- chunked trailers are dropped (httptools reports them as more headers, and uvicorn appended
  them to the request's headers: a key sent only as a trailer authenticated at the gateway).

And one thing uvicorn does slowly: it writes a response's head and body in two transport writes (two
send() syscalls, two TCP segments for a small answer); `_OneWrite` sends them as one (~5 % more
requests per CPU-second on the digits model, loadtests/bench/results/merged-ab.md).

`config(app, ...)` builds the uvicorn.Config every service runs with; the limits come from the
environment (`HttpLimits.from_env`), so the supervisor, a pod spec or a test sets them alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.errors import error_body

log = logging.getLogger(__name__)

MAX_HEADER_BYTES_ENV = "MESHSERVE_HTTP_MAX_HEADER_BYTES"
MAX_HEADERS_ENV = "MESHSERVE_HTTP_MAX_HEADERS"
HEADER_TIMEOUT_ENV = "MESHSERVE_HTTP_HEADER_TIMEOUT"
BODY_TIMEOUT_ENV = "MESHSERVE_HTTP_BODY_TIMEOUT"


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 60 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpLimits:
        env = os.environ if environ is None else environ
        default = cls()
        try:
            limits = cls(
                int(env.get(MAX_HEADER_BYTES_ENV, default.max_header_bytes)),
                int(env.get(MAX_HEADERS_ENV, default.max_headers)),
                float(env.get(HEADER_TIMEOUT_ENV, default.header_timeout)),
                float(env.get(BODY_TIMEOUT_ENV, default.body_timeout)),
            )
        except ValueError as exc:
            raise ValueError(f"an HTTP limit in the environment is not a number: {exc}") from None
        if min(limits.max_header_bytes, limits.max_headers) < 1 or min(limits.header_timeout, limits.body_timeout) <= 0:
            raise ValueError(f"HTTP limits must be positive: {limits}")
        return limits


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the answer is in `_refusal`."""


def _response(status: int, reason: str, message: str) -> bytes:
    body = error_body(message)
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _OneWrite:
    """The transport a response is written through: uvicorn writes a response's head and its body in
    two transport.write calls (two send() syscalls, two TCP segments for a small answer); this holds
    the head until the body's first write, or until the response completes, and sends them as one."""

    __slots__ = ("cycle", "fresh", "held", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.cycle: Any = None
        self.fresh = False  # the current cycle's head is not written yet
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held + data)
        elif self.fresh and self.cycle.response_started:  # the head (a 100 Continue comes before the start)
            self.fresh = False
            self.held = data
        else:
            self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


_IDLE, _HEAD, _BODY = 0, 1, 2  # where a connection is: between requests, inside a head, inside a body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under `limits` (a class attribute: see `protocol_class`).

    Lean on purpose (every callback here runs per request; loadtests/bench/results/hotpath.md): the
    phase is one int, deadlines move by assignment, and on_body/on_message_complete stay uvicorn's.
    """

    limits: HttpLimits = HttpLimits()
    _max_bytes = limits.max_header_bytes
    _max_fields = limits.max_headers
    _header_timeout = limits.header_timeout
    _body_timeout = limits.body_timeout
    # whether a phase's deadline can come before the armed timer's (only when the timeouts differ)
    _head_sooner = limits.header_timeout < limits.body_timeout
    _body_sooner = limits.body_timeout < limits.header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase = _IDLE
        self._head_bytes = 0  # of a head longer than one read: what the reads so far brought of it
        self._counted = False  # the current head began in the current read
        self._read = 0  # bytes in the current read
        self._refusal: bytes | None = None
        self._now = self.loop.time()  # of the current read: the callbacks set deadlines from it
        self._deadline = self._now + self._header_timeout
        self._timer: asyncio.TimerHandle | None = self.loop.call_at(self._deadline, self._timed_out)
        self._out = _OneWrite(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # ------------------------------------------------------------ the one timer
    # One timer per connection whose deadline moves: a later deadline costs an assignment, the timer
    # re-arms itself when it fires early, and it lapses when it fires between two requests or while
    # the app works on a request whose body is all in (the next request's first byte sets it again;
    # uvicorn's keep-alive timer governs idle connections).

    def _move_deadline(self, deadline: float) -> None:
        """An earlier deadline than the armed timer's (or none armed): re-arm."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        phase = self._phase
        cycle = self.cycle
        if phase == _IDLE or (phase == _BODY and (cycle is None or not cycle.more_body)):
            if phase == _IDLE and cycle is None:  # opened and never used: nobody to answer
                self.transport.close()
            return  # between requests, or the body is in and the app is at work
        if self._deadline > self.loop.time():  # the deadline moved on since the timer was set
            self._timer = self.loop.call_at(self._deadline, self._timed_out)
            return
        if self.flow.read_paused:  # our own back-pressure (or a pipelined request waiting), not a slow client
            self._now = self.loop.time()
            self._move_deadline(self._now + (self._header_timeout if phase == _HEAD else self._body_timeout))
            return
        if phase == _HEAD:
            self._close_with(_response(408, "Request Timeout", "request headers not received in time"))
            return
        if cycle.response_complete:
            return
        if not cycle.response_started:
            self.transport.write(_response(408, "Request Timeout", "request body not received in time"))
        cycle.disconnected = True  # the app's receive() now says http.disconnect; its sends are dropped
        cycle.message_event.set()
        self.transport.close()

    def _close_with(self, response: bytes) -> None:
        self.transport.write(response)
        self.transport.close()

    # ------------------------------------------------------------ parsing

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        now = self._now = self.loop.time()
        self._counted = False
        self._read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._close_with(self._refusal)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        phase = self._phase
        if phase == _BODY:
            self._deadline = now + self._body_timeout  # the body is still arriving: not stalled
        elif phase == _HEAD:
            # A read ended inside a head: what the parser holds of it grows with every read. From the
            # read it began in, what the parser delivered; every later read counts whole: an endless
            # head costs at most the cap plus one socket read.
            if self._counted:
                self._head_bytes = self._head_size()
            else:
                self._head_bytes += len(data)
            if self._head_bytes > self._max_bytes or len(self.headers) > self._max_fields:
                self._close_with(self._too_large())

    def _too_large(self) -> bytes:
        limits = self.limits
        message = f"request headers exceed {limits.max_header_bytes} bytes or {limits.max_headers} fields"
        return _response(431, "Request Header Fields Too Large", message)

    def _refuse(self, response: bytes) -> None:
        self._refusal = response
        raise _Refused

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase, self._counted = _HEAD, True  # this head began in this read
        deadline = self._deadline = self._now + self._header_timeout
        timer = self._timer
        if timer is None or (self._head_sooner and deadline < timer.when()):
            self._move_deadline(deadline)

    # Per field only the trailer check: the caps are checked once per head (on_headers_complete) and,
    # for a head longer than one read, at the end of each read inside it (data_received).

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase != _HEAD:
            return  # a chunked trailer: never part of the request's headers
        name = name.lower()  # uvicorn's body from here
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def _head_size(self) -> int:
        """Bytes of the head the parser has delivered: the target and every field (name, value, ': ', CRLF)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_headers_complete(self) -> None:
        # A head that began and ended in this read is at most the read long: counted only if that is over the cap.
        if (not self._counted or self._read > self._max_bytes) and self._head_size() > self._max_bytes:
            self._refuse(self._too_large())
        if len(self.headers) > self._max_fields:
            self._refuse(self._too_large())
        self._phase = _BODY
        deadline = self._deadline = self._now + self._body_timeout
        if self._body_sooner and deadline < self._timer.when():  # type: ignore[union-attr]
            self._move_deadline(deadline)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            out = self._out
            out.flush()
            out.cycle, out.fresh = cycle, True
            cycle.transport = out

    def on_response_complete(self) -> None:
        self._out.flush()  # a response without a body write (HEAD, 204) still goes out
        super().on_response_complete()


def protocol_class(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol with `limits` bound (uvicorn builds protocols from a class and its Config)."""
    bound = {
        "limits": limits,
        "_max_bytes": limits.max_header_bytes,
        "_max_fields": limits.max_headers,
        "_header_timeout": limits.header_timeout,
        "_body_timeout": limits.body_timeout,
        "_head_sooner": limits.header_timeout < limits.body_timeout,
        "_body_sooner": limits.body_timeout < limits.header_timeout,
    }
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), bound)


def config(app: Any, *, limits: HttpLimits | None = None, **options: Any) -> uvicorn.Config:
    """uvicorn.Config for a meshserve service: uvloop, the guarded httptools protocol, no access log,
    no proxy-header rewriting."""
    defaults: dict[str, Any] = {
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,  # keep the ECS JSON logging set up by services.common.telemetry
        "server_header": False,
        # No X-Forwarded-* rewriting of the client address: the services sit behind the gateway and the
        # mesh's sidecars, nothing reads scope["client"], and uvicorn's middleware for it cost ~100
        # bytecodes per request (loadtests/bench/results/hotpath.md), as much as the guard above.
        "proxy_headers": False,
    }
    defaults.update(options)
    return uvicorn.Config(app, http=protocol_class(limits or HttpLimits.from_env()), **defaults)


class DrainingServer(uvicorn.Server):
    """Every service's lifecycle (model server, pipeline, gateway alike).

    SIGTERM/SIGINT: `on_drain()` at once (readiness turns false), then `grace` seconds of serving as
    usual, then the drain: a service that refuses new work while draining (the model server answers
    503 + Retry-After) passes `in_flight` and keeps listening until that is 0, so its accepted work
    finishes; without it the listeners close and uvicorn waits for the requests in progress. Either
    way the whole drain ends at the `limit` (by default the Config's `timeout_graceful_shutdown`),
    at most `unfinished_grace` after `in_flight` reached 0 (what is left then is a request whose body
    is still arriving): requests still running then are cancelled, so a slow sender cannot hold the
    process. A second signal stops at once. The exit status is 0 either way.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_drain: Callable[[], object] | None = None,
        grace: float = 0.0,
        *,
        in_flight: Callable[[], int] | None = None,
        limit: float | None = None,
        unfinished_grace: float | None = None,
    ) -> None:
        super().__init__(config)
        self.on_drain = on_drain
        self.grace = grace
        self.in_flight = in_flight
        self.limit = limit if limit is not None else (config.timeout_graceful_shutdown or 30.0)
        self.unfinished_grace = unfinished_grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task | None = None

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Replaces uvicorn's handler, which would stop accepting at once and re-raise the signal after
        # shutdown (exit status 143 instead of 0).
        if self._draining or self._loop is None:
            self.force_exit = self._draining
            self.should_exit = True
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self.on_drain is not None:
            self.on_drain()
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        started = time.monotonic()
        in_flight = self.in_flight or (lambda: 0)
        while (elapsed := time.monotonic() - started) < self.limit:
            if elapsed >= self.grace and in_flight() == 0:
                log.info("drained; shutting down")
                break
            await asyncio.sleep(0.01)
        else:
            log.warning("drain limit reached with %d requests in flight", in_flight())
        left = max(self.limit - (time.monotonic() - started), 0.1)
        grace = self.unfinished_grace
        self.config.timeout_graceful_shutdown = min(left, grace) if grace is not None else left
        self.should_exit = True
