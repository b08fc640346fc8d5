"""Query-of-death memory: requests whose try ended with the upstream's connection reset.

A reset is what a replica that crashes mid-request looks like from outside, and the retry on reset
is what keeps a SIGKILLed replica from costing any client an error. It is also how one poisoned
body (a request that crashes whichever process parses it) would be replayed to every replica a
retry can reach, and again by every client retry. So each reset is remembered by the request's
fingerprint (method, target, body) with the hosts it reset; once a fingerprint has reset
`max_hosts` different hosts (2) it is refused without a try, for `ttl` seconds after its last reset.
An answer to the same fingerprint clears it: a body that some replica answered is no query of death
(this is what keeps innocent requests that were in flight on a killed replica, and load tests that
send one body over and over, from being quarantined by a later, unrelated kill).

The price, on purpose: requests with the same body as one that reset two hosts together (two replicas
lost at the same instant while identical requests were in flight on both) are refused too, until one
identical request already past the check is answered somewhere, or for at most `ttl` after the last reset.

Pure state, the clock passed in; bounded (LRU, `capacity` fingerprints). While nothing is
remembered the caller skips fingerprinting altogether (`active` is False), so the hot path pays
nothing until some connection resets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

MAX_HOSTS = 2
TTL_S = 60.0
CAPACITY = 1024


def fingerprint(method: str, target: str, body: bytes) -> tuple[str, str, int, int]:
    """A request's identity for the memory (bytes cache their hash: a retry costs nothing more)."""
    return (method, target, len(body), hash(body))


class ResetMemory:
    """Fingerprint -> (hosts it reset, time of the last reset)."""

    def __init__(self, max_hosts: int = MAX_HOSTS, ttl: float = TTL_S, capacity: int = CAPACITY) -> None:
        self.max_hosts = max_hosts
        self.ttl = ttl
        self.capacity = capacity
        self._seen: OrderedDict[Hashable, tuple[frozenset[Hashable], float]] = OrderedDict()

    @property
    def active(self) -> bool:
        return bool(self._seen)

    def hosts(self, key: Hashable, now: float) -> int:
        """How many hosts this fingerprint has reset within the ttl."""
        entry = self._seen.get(key)
        if entry is None:
            return 0
        if now - entry[1] > self.ttl:
            del self._seen[key]
            return 0
        return len(entry[0])

    def refused(self, key: Hashable, now: float) -> bool:
        return self.hosts(key, now) >= self.max_hosts

    def reset(self, key: Hashable, host: Hashable, now: float) -> int:
        """Record that `key` reset `host`; returns how many hosts it has reset now."""
        hosts = self._seen.pop(key, (frozenset(), now))[0] if self.hosts(key, now) else frozenset()
        hosts = hosts | {host}
        self._seen[key] = (hosts, now)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return len(hosts)

    def answered(self, key: Hashable) -> None:
        """Some host answered `key`: it is not a query of death."""
        self._seen.pop(key, None)
