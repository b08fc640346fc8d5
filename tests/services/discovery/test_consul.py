"""The Consul backend against an in-process fake of the agent's HTTP API (no Consul agent runs here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from services.discovery import Endpoint, from_env
from services.discovery.consul import ConsulDiscovery


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


def test_cached_endpoints_follow_changes_through_blocking_queries(fake_consul, instances) -> None:
    consul_url, state = fake_consul
    base, ready = instances
    discovery = from_env({"MESHSERVE_DISCOVERY": f"consul:{consul_url}"})
    assert isinstance(discovery, ConsulDiscovery)
    assert discovery.endpoints("digits-v1") == []
    ready["a"] = True
    discovery.register(_endpoint(base, "a"), "/ready/a")
    _until(lambda: [e.instance for e in discovery.endpoints("digits-v1")] == ["a"])
    # nothing changes now: the background watcher waits inside one blocking query instead of polling
    queries = state.health_queries
    time.sleep(0.5)
    assert state.health_queries - queries <= 1
    ready["a"] = False  # the check fails: the instance leaves the healthy set
    _until(lambda: discovery.endpoints("digits-v1") == [])
    discovery.close()


def test_watch_wakes_on_change(fake_consul, instances) -> None:
    consul_url, _ = fake_consul
    base, ready = instances
    discovery = ConsulDiscovery(consul_url, wait="10s")

    async def scenario() -> list[list[str]]:
        seen: list[list[str]] = []
        stream = discovery.watch("digits-v1")
        seen.append([e.instance for e in await anext(stream)])
        ready["a"] = True
        await asyncio.to_thread(discovery.register, _endpoint(base, "a"), "/ready/a")
        started = time.monotonic()
        seen.append([e.instance for e in await asyncio.wait_for(anext(stream), 5)])
        assert time.monotonic() - started < 5  # woken by the change, not by the 10 s wait running out
        await asyncio.to_thread(discovery.deregister, _endpoint(base, "a"))
        seen.append([e.instance for e in await asyncio.wait_for(anext(stream), 5)])
        await stream.aclose()
        return seen

    assert asyncio.run(scenario()) == [[], ["a"], []]
    discovery.close()
