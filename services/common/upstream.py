"""The endpoints of one upstream service: least-request picking and Envoy outlier detection.

Pure state, no I/O and no clock of its own (callers pass `now`, a monotonic time), so the
ejection rules are unit-tested exactly. Semantics follow Envoy's outlier detection as Istio
configures it: `consecutive_5xx_errors` failures in a row (connect failures, resets and
timeouts count as 5xx, as Envoy does without split local-origin errors) eject a host for
`base_ejection_time x times ejected`; it is readmitted after that with its counter reset; the
multiplier decays by one per `interval` spent healthy; and no ejection takes more than
`max_ejection_percent` of the hosts out, except that one host may always be ejected.

Panic (Envoy's healthy panic threshold, at its floor): ejection never leaves a route with no host
while a host exists. When every host is ejected, `pick` balances over all of them, ejected or not,
so an upstream whose only replica was ejected is tried again at once instead of answering 503 for
the whole ejection time; a host that is back answers, one that is still down fails the try as it
would have without ejection.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class OutlierPolicy(Protocol):
    """What ejection reads (mesh.spec.OutlierDetection fits; the transport never needs the spec's schema)."""

    @property
    def consecutive_5xx_errors(self) -> int: ...
    @property
    def interval(self) -> float: ...
    @property
    def base_ejection_time(self) -> float: ...
    @property
    def max_ejection_percent(self) -> float: ...


class EndpointLike(Protocol):
    """What discovery hands out (services.discovery.Endpoint has these fields)."""

    instance: str
    host: str
    port: int


@dataclass(slots=True, eq=False)
class Host:
    """One endpoint of an upstream and its load-balancing and outlier state."""

    instance: str
    host: str
    port: int
    base_url: str = field(init=False)
    in_flight: int = 0
    consecutive_5xx: int = 0
    ejected_until: float = 0.0  # monotonic deadline; 0.0 = in rotation
    times_ejected: int = 0
    healthy_since: float = 0.0  # when it was last readmitted (for the multiplier's decay)

    def __post_init__(self) -> None:
        self.base_url = f"http://{self.host}:{self.port}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0.0


HostCallback = Callable[[Host], None]


def _noop(_: Host) -> None:
    return None


class HostPool:
    """The hosts of one upstream; `pick` balances, `record` feeds outlier detection."""

    def __init__(
        self,
        policy: OutlierPolicy,
        *,
        on_eject: HostCallback = _noop,
        on_readmit: HostCallback = _noop,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.hosts: list[Host] = []
        self.ejected_count = 0
        self._on_eject = on_eject
        self._on_readmit = on_readmit
        self._rng = rng or random.Random()

    # ------------------------------------------------------------ membership

    def update(self, endpoints: Iterable[EndpointLike]) -> None:
        """Replace the host list from discovery, keeping the state of hosts still present."""
        known = {h.key: h for h in self.hosts}
        fresh: list[Host] = []
        for ep in endpoints:
            host = known.get((ep.host, ep.port))
            if host is None:
                host = Host(ep.instance, ep.host, ep.port)
            else:
                host.instance = ep.instance
            fresh.append(host)
        kept = {h.key for h in fresh}
        for gone in self.hosts:
            if gone.ejected and gone.key not in kept:
                self._on_readmit(gone)  # out of the pool altogether: no longer counted as ejected
        self.hosts = fresh
        self.ejected_count = sum(1 for h in fresh if h.ejected)

    # ------------------------------------------------------------ balancing

    def readmit_due(self, now: float) -> None:
        """Put back every host whose ejection time is over (Envoy's interval sweep, done lazily)."""
        if not self.ejected_count:
            return
        for host in self.hosts:
            if host.ejected and host.ejected_until <= now:
                host.ejected_until = 0.0
                host.consecutive_5xx = 0
                host.healthy_since = now
                self.ejected_count -= 1
                self._on_readmit(host)

    def pick(self, now: float, exclude: Sequence[Host] = ()) -> Host | None:
        """Least request by power of two choices over hosts in rotation; avoids `exclude` if it can."""
        self.readmit_due(now)
        hosts = self.hosts
        if self.ejected_count:
            hosts = [h for h in hosts if not h.ejected] or hosts  # none left in rotation: panic, use all
        if exclude and len(hosts) > 1:
            others = [h for h in hosts if h not in exclude]
            hosts = others or hosts
        n = len(hosts)
        if n == 0:
            return None
        if n == 1:
            return hosts[0]
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = hosts[i], hosts[j]
        return b if b.in_flight < a.in_flight else a

    # ------------------------------------------------------------ outlier detection

    def record(self, host: Host, failed: bool, now: float) -> bool:
        """Feed one result (failed = 5xx, connect failure, reset or timeout); True if it ejected the host."""
        if not failed:
            host.consecutive_5xx = 0
            return False
        threshold = self.policy.consecutive_5xx_errors
        if threshold <= 0 or host.ejected:
            return False
        host.consecutive_5xx += 1
        if host.consecutive_5xx < threshold or not self._may_eject():
            return False
        self._eject(host, now)
        return True

    def _may_eject(self) -> bool:
        total = len(self.hosts)
        if total == 0:
            return False
        if self.ejected_count == 0:
            return True
        return 100.0 * (self.ejected_count + 1) / total <= self.policy.max_ejection_percent

    def _eject(self, host: Host, now: float) -> None:
        interval = self.policy.interval
        if host.times_ejected and interval > 0 and host.healthy_since:
            decay = int((now - host.healthy_since) // interval)
            host.times_ejected = max(0, host.times_ejected - decay)
        host.times_ejected += 1
        host.ejected_until = max(now + self.policy.base_ejection_time * host.times_ejected, 1e-9)
        host.consecutive_5xx = 0
        self.ejected_count += 1
        self._on_eject(host)
