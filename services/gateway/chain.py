"""The gateway as an ordered chain of small policies, in phases (Kong's plugin phases, Envoy's filter chain).

Each policy is a small object that implements one or more phase methods; the chain lists them in one
order, and each phase runs its policies in that order:

  access(ex)          headers known, body not read: route, key-auth, rate limit, version, declared length
  async read(ex)      the body, under the limit
  forward(ex)         body known, before the upstream call: upstream headers and target, the mirror's copy
  async proxy(ex)     the upstream call (exactly one policy: the terminal one)
  response(ex)        after the upstream call, whatever its outcome: the mirror's hand-off, the answer
  log(ex)             after the answer is sent: metrics

A policy lets the request go on by returning, annotating the per-request `Exchange` as it goes, or
answers it by raising an services.common.errors.HTTPError (rendered by `Exchange.refuse`; the later
phases do not run, the log phase does). The phases' bound methods are collected once when the chain
is built, so a request costs one `Exchange` and a loop over tuples: no lookup by name, no coroutine
for a phase that is not async.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from services.common.asgi import ClientGone
from services.common.client import Client
from services.common.errors import HTTPError
from services.gateway.bodylimit import MAX_BODY_BYTES, BodyLimit
from services.gateway.exchange import Exchange
from services.gateway.forward import Forward, ResponseFilter
from services.gateway.keyauth import KeyAuth
from services.gateway.metrics import RequestMetrics
from services.gateway.mirror import Mirror
from services.gateway.proxy import Proxy
from services.gateway.ratelimit import RateLimit, RateLimiter
from services.gateway.route import RouteMatch, VersionChoice

Step = Callable[[Exchange], None]
AsyncStep = Callable[[Exchange], Awaitable[None]]
PHASES = ("access", "read", "forward", "proxy", "response", "log")


class Chain:
    """The policies in order, and per phase the bound methods that run."""

    def __init__(self, policies: Sequence[object]) -> None:
        self.policies = tuple(policies)
        unknown = [type(p).__name__ for p in self.policies if not any(hasattr(p, ph) for ph in PHASES)]
        if unknown:
            raise TypeError(f"policies without a phase method ({', '.join(PHASES)}): {unknown}")
        self.access: tuple[Step, ...] = self._phase("access")
        self.read: tuple[AsyncStep, ...] = self._phase("read")
        self.forward: tuple[Step, ...] = self._phase("forward")
        proxies: tuple[AsyncStep, ...] = self._phase("proxy")
        if len(proxies) != 1:
            raise TypeError(f"a chain has exactly one proxy policy, not {len(proxies)}")
        self.proxy = proxies[0]
        self.response: tuple[Step, ...] = self._phase("response")
        self.log: tuple[Step, ...] = self._phase("log")

    def _phase(self, name: str) -> tuple[Any, ...]:
        return tuple(getattr(p, name) for p in self.policies if hasattr(p, name))

    def of(self, kind: type) -> Any:
        """The chain's policy of a type (e.g. Mirror, to cancel its copies on shutdown)."""
        return next(p for p in self.policies if isinstance(p, kind))

    async def run(self, ex: Exchange, send: Any) -> None:
        """One request through every phase; the answer is sent before the log phase."""
        try:
            for step in self.access:
                step(ex)
            for read in self.read:
                await read(ex)
            for step in self.forward:
                step(ex)
            try:
                await self.proxy(ex)
            finally:  # a mirror's copy waits for the primary's reply, even when the call failed
                for step in self.response:
                    step(ex)
        except HTTPError as exc:
            ex.refuse(exc)
        except ClientGone:
            return  # nobody to answer, and a truncated body must not go upstream
        await respond(send, ex.status, ex.response_headers or [], ex.payload)
        for step in self.log:
            step(ex)


def gateway_chain(
    client: Client,
    *,
    limiter: RateLimiter | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    draw: Callable[[], float] = random.random,
) -> Chain:
    """The gateway's policies, in order."""
    return Chain(
        (
            RouteMatch(),  # access: route + metric label + error key (never answers)
            KeyAuth(),  # access: 401
            RateLimit(limiter),  # access: 429, X-RateLimit-* on every answer
            VersionChoice(draw),  # access: version/upstream; 400/404/503
            BodyLimit(max_body_bytes),  # access: declared length; read: the body; 413
            Forward(),  # forward: upstream headers and target
            Mirror(client, draw),  # forward: the copy; response: the primary's reply for comparison
            Proxy(client),  # proxy: the upstream call; 502/503/504 when it gives no answer
            ResponseFilter(),  # response: passed-back headers, metadata under a split, x-model-version
            RequestMetrics(),  # log: requests and duration
        )
    )


async def respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
