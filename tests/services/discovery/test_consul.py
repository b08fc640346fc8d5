"""The Consul backend against an in-process fake of the agent's HTTP API (no Consul agent runs here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from urllib.parse import urlsplit

import httpx

from services.discovery import Endpoint, from_env
from services.discovery.consul import ConsulDiscovery

from .fake_consul import FakeConsulState, HealthQuery


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def _endpoint(base: str, instance: str, version: str = "1") -> Endpoint:
    parts = urlsplit(base)
    return Endpoint("digits-v1", instance, parts.hostname, parts.port, {"version": version})


def test_register_check_passing_only_lookup_and_deregister(fake_consul, instances) -> None:
    consul_url, state = fake_consul
    base, ready = instances
    discovery = ConsulDiscovery(consul_url)
    a, b = _endpoint(base, "a"), _endpoint(base, "b")
    ready["a"] = True
    discovery.register(a, "/ready/a")
    discovery.register(b, "/ready/b")  # its readiness answers 503: registered but never passing

    registered = state.services["a"]
    assert registered["name"] == "digits-v1"
    assert registered["checks"][0]["http"] == f"{base}/ready/a"
    assert registered["meta"] == {"version": "1"}

    _until(lambda: discovery.lookup("digits-v1")[1] == [a])
    everything = httpx.get(f"{consul_url}/v1/health/service/digits-v1").json()
    assert sorted(e["Service"]["ID"] for e in everything) == ["a", "b"]

    ready["b"] = True
    _until(lambda: discovery.lookup("digits-v1")[1] == [a, b])
    discovery.deregister(a)
    assert "a" not in state.services
    assert discovery.lookup("digits-v1")[1] == [b]
    discovery.close()


def _chained(queries: list[HealthQuery], wait: str) -> bool:
    """Every query after the first is a blocking one at the index the previous one answered."""
    return all(
        (query.index, query.wait) == (str(previous.answered_index), wait) for previous, query in pairwise(queries)
    )


def test_cached_endpoints_follow_changes_through_blocking_queries(fake_consul, instances) -> None:
    consul_url, state = fake_consul
    base, ready = instances
    discovery = from_env({"MESHSERVE_DISCOVERY": f"consul:{consul_url}"})
    assert isinstance(discovery, ConsulDiscovery)
    assert discovery.endpoints("digits-v1") == []
    ready["a"] = True
    discovery.register(_endpoint(base, "a"), "/ready/a")
    _until(lambda: [e.instance for e in discovery.endpoints("digits-v1")] == ["a"])

    def waiting_at_current_index() -> bool:
        return state.parked == 1 and state.queries[-1].index == str(state.index)

    # Nothing changes now: the background watcher waits inside one blocking query instead of polling.
    _until(waiting_at_current_index)
    waiting, before = state.queries[-1], len(state.queries)
    assert waiting.passing and waiting.wait == discovery.wait
    ready["a"] = False  # the check fails: the instance leaves the healthy set
    _until(lambda: discovery.endpoints("digits-v1") == [])
    _until(waiting_at_current_index)
    # One change, one wake-up: the waiting query answered it, and one new blocking query followed.
    assert waiting.ended == "changed"
    assert len(state.queries) == before + 1
    assert state.queries[0].index is None and _chained(state.queries, discovery.wait), state.queries
    discovery.close()


async def _parked(state: FakeConsulState, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while state.parked != 1:
        assert time.monotonic() < deadline, "the watch never waited in a blocking query"
        await asyncio.sleep(0.01)


def test_watch_wakes_on_change(fake_consul, instances) -> None:
    consul_url, state = fake_consul
    base, ready = instances
    discovery = ConsulDiscovery(consul_url, wait="10s")
    a = _endpoint(base, "a")

    async def next_after(stream: AsyncIterator[list[Endpoint]], change: Callable[[], None]) -> list[str]:
        """Wait until the watch is inside a blocking query, make the change, return what it yields."""
        pending = asyncio.ensure_future(anext(stream))
        await _parked(state)
        woken = state.queries[-1]
        await asyncio.to_thread(change)
        value = await asyncio.wait_for(pending, 30)  # a guard against a hang, not a speed bound
        assert woken.ended == "changed", woken  # the change ended the wait, not the 10 s running out
        return [e.instance for e in value]

    async def scenario() -> list[list[str]]:
        stream = discovery.watch("digits-v1")
        seen = [[e.instance for e in await anext(stream)]]
        ready["a"] = True
        seen.append(await next_after(stream, lambda: discovery.register(a, "/ready/a")))
        seen.append(await next_after(stream, lambda: discovery.deregister(a)))
        await stream.aclose()
        return seen

    assert asyncio.run(scenario()) == [[], ["a"], []]
    assert state.queries[0].index is None and _chained(state.queries, "10s"), state.queries
    assert "waited" not in {q.ended for q in state.queries}
    discovery.close()
