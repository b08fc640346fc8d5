"""Kong rate-limiting, `policy: local`: fixed windows aligned to the clock, counted per consumer.

A request is refused (429) when any window is already full; otherwise it counts in every window.
Headers as Kong sends them: X-RateLimit-Limit-<Window>/X-RateLimit-Remaining-<Window> for each
window, RateLimit-Limit/-Remaining/-Reset for the window closest to its limit, Retry-After on 429.
`RateLimit` is the policy in the gateway's chain (services.gateway.chain) that applies it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.gateway import metrics
from services.gateway.exchange import Exchange, GatewayError

PERIODS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(slots=True)
class Verdict:
    allowed: bool
    headers: list[tuple[bytes, bytes]]
    retry_after: int = 0


# per window, Kong's X-RateLimit-Limit-<window> / X-RateLimit-Remaining-<window> names, encoded once
_HEADER_NAMES = {w: (f"x-ratelimit-limit-{w}".encode(), f"x-ratelimit-remaining-{w}".encode()) for w in PERIODS}


class RateLimiter:
    """Counters keyed by (consumer, window); limits may change between calls (a spec reload)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[float]] = {}  # -> [window start, count]

    def check(self, consumer: str, limits: dict[str, int], now: float) -> Verdict:
        """Count one request at `now` (epoch seconds) against `limits` ({"second": 10, ...})."""
        states = []
        exceeded: tuple[str, float] | None = None
        for window, limit in limits.items():
            period = PERIODS[window]
            start = now - now % period
            entry = self._counts.get((consumer, window))
            if entry is None or entry[0] != start:
                entry = [start, 0]
                self._counts[(consumer, window)] = entry
            reset = start + period - now
            if entry[1] >= limit and exceeded is None:
                exceeded = (window, reset)
            states.append((window, limit, entry, reset))
        if exceeded is None:
            for state in states:
                state[2][1] += 1
        headers: list[tuple[bytes, bytes]] = []
        tightest = None
        for window, limit, entry, reset in states:
            remaining = max(0, limit - int(entry[1]))
            limit_name, remaining_name = _HEADER_NAMES[window]
            headers.append((limit_name, str(limit).encode()))
            headers.append((remaining_name, str(remaining).encode()))
            if tightest is None or remaining < tightest[1]:
                tightest = (limit, remaining, reset)
        if tightest is not None:
            limit, remaining, reset = tightest
            headers.append((b"ratelimit-limit", str(limit).encode()))
            headers.append((b"ratelimit-remaining", str(remaining).encode()))
            headers.append((b"ratelimit-reset", str(max(1, math.ceil(reset))).encode()))
        if exceeded is not None:
            retry_after = max(1, math.ceil(exceeded[1]))
            headers.append((b"retry-after", str(retry_after).encode()))
            return Verdict(False, headers, retry_after)
        return Verdict(True, headers)


class RateLimited(GatewayError):
    """A window is full: 429 with Kong's message; the X-RateLimit-* and Retry-After headers are the
    verdict's, already on the exchange."""

    key = "message"

    def __init__(self) -> None:
        super().__init__(429, "API rate limit exceeded")


class RateLimit:
    """Access phase: counts the consumer's request in its windows; their headers go on every answer."""

    def __init__(self, limiter: RateLimiter | None = None, clock: Callable[[], float] = time.time) -> None:
        self.limiter = RateLimiter() if limiter is None else limiter
        self.clock = clock

    def access(self, ex: Exchange) -> None:
        limits = ex.policy.limits.get(ex.consumer)
        if not limits:
            return
        verdict = self.limiter.check(ex.consumer, limits, self.clock())
        ex.extra.extend(verdict.headers)
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels(ex.consumer).inc()
            raise RateLimited
