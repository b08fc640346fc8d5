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

`config(app, ...)` builds the uvicorn.Config every service runs with; the limits come from the
environment (`HttpLimits.from_env`), so the supervisor, a pod spec or a test sets them alike.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.errors import error_body

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


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under `limits` (a class attribute: see `protocol_class`)."""

    limits: HttpLimits = HttpLimits()
    _max_bytes = limits.max_header_bytes
    _max_fields = limits.max_headers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True  # reading a request line + headers (or waiting for one)
        self._head_bytes = 0
        self._head_fields = 0
        self._counted = False
        self._started = False  # a byte of the current request arrived, and not yet all of it
        self._refusal: bytes | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._now = self.loop.time()  # of the current read: the callbacks it runs set deadlines from it
        self._deadline = 0.0
        self._set_deadline(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # ------------------------------------------------------------ the one timer
    # One timer per connection whose deadline moves: setting a later deadline costs an assignment, the
    # timer re-arms itself when it fires early, and it lapses when it fires between two requests (the
    # next request's first byte sets it again; uvicorn's keep-alive timer governs idle connections).

    def _set_deadline(self, delay: float) -> None:
        self._deadline = self._now + delay
        timer = self._timer
        if timer is None or self._deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(self._deadline, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_head and not self._started:
            if self.cycle is None:  # opened and never used: nobody to answer
                self.transport.close()
            return  # between requests
        if self._deadline > self.loop.time():  # the deadline moved on since the timer was set
            self._timer = self.loop.call_at(self._deadline, self._timed_out)
            return
        if self.flow.read_paused:  # our own back-pressure (or a pipelined request waiting), not a slow client
            self._now = self.loop.time()
            self._set_deadline(self.limits.header_timeout if self._in_head else self.limits.body_timeout)
            return
        if self._in_head:
            self._close_with(_response(408, "Request Timeout", "request headers not received in time"))
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
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
        self._now = self.loop.time()
        self._counted = False
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
        if self._in_head and self._started and not self._counted:
            # Still inside a head: what the parser holds of it grows with every read.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_bytes:
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
        self._in_head, self._started, self._counted = True, True, True  # callbacks count this read's part
        self._head_bytes, self._head_fields = 0, 0
        self._set_deadline(self.limits.header_timeout)

    # on_url and on_header run per request and per field: uvicorn's bodies inlined, limits read from the class.

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self._max_bytes:
            self._refuse(self._too_large())
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked trailer: never part of the request's headers
        self._head_fields += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._head_fields > self._max_fields or self._head_bytes > self._max_bytes:
            self._refuse(self._too_large())
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head, self._counted = False, True
        self._set_deadline(self.limits.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._deadline = self._now + self.limits.body_timeout
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head, self._started = True, False
        super().on_message_complete()


def protocol_class(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol with `limits` bound (uvicorn builds protocols from a class and its Config)."""
    bound = {"limits": limits, "_max_bytes": limits.max_header_bytes, "_max_fields": limits.max_headers}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), bound)


def config(app: Any, *, limits: HttpLimits | None = None, **options: Any) -> uvicorn.Config:
    """uvicorn.Config for a meshserve service: uvloop, the guarded httptools protocol, no access log."""
    defaults: dict[str, Any] = {
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,  # keep the ECS JSON logging set up by services.common.telemetry
        "server_header": False,
    }
    defaults.update(options)
    return uvicorn.Config(app, http=protocol_class(limits or HttpLimits.from_env()), **defaults)


class DrainingServer(uvicorn.Server):
    """SIGTERM/SIGINT: `on_drain()` at once (readiness turns false), uvicorn's graceful stop after
    `grace` seconds, and that stop bounded by the Config's `timeout_graceful_shutdown` (the drain limit):
    requests still running then are cancelled, so a slow sender cannot hold the process. A second
    signal stops at once."""

    def __init__(self, config: uvicorn.Config, on_drain: Any = None, grace: float = 0.0) -> None:
        super().__init__(config)
        self.on_drain = on_drain
        self.grace = grace
        self._draining = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Replaces uvicorn's handler, which would re-raise the signal after shutdown (exit 143, not 0).
        if self._draining:
            self.force_exit = self.should_exit = True
            return
        self._draining = True
        if self.on_drain is not None:
            self.on_drain()
        if self.grace <= 0:
            self.should_exit = True
            return
        timer = threading.Timer(self.grace, setattr, (self, "should_exit", True))
        timer.daemon = True
        timer.start()
