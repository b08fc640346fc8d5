"""Consul discovery through py-consul: agent registration, health-filtered lookups, blocking watches.

`register` adds the instance to the local agent with an HTTP check on its readiness endpoint (and
DeregisterCriticalServiceAfter, so a vanished process does not linger); `endpoints` answers from a cache
that a background blocking query (`?index=&wait=`) keeps current, so per-request lookups cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import consul

from services.discovery import Endpoint

log = logging.getLogger(__name__)


def parse_health(service: str, entries: list[dict[str, Any]]) -> list[Endpoint]:
    """/v1/health/service entries -> endpoints (the service address, else the node's), by instance id."""
    endpoints = []
    for entry in entries:
        svc = entry["Service"]
        host = svc.get("Address") or entry.get("Node", {}).get("Address", "127.0.0.1")
        endpoints.append(Endpoint(service, svc["ID"], host, int(svc["Port"]), dict(svc.get("Meta") or {})))
    return sorted(endpoints, key=lambda e: e.instance)


class ConsulDiscovery:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8500",
        *,
        check_interval: str = "1s",
        check_timeout: str = "1s",
        deregister_after: str = "1m",
        wait: str = "30s",
    ) -> None:
        parts = urlsplit(url if "//" in url else f"//{url}")
        self.client = consul.Consul(
            host=parts.hostname or "127.0.0.1", port=parts.port or 8500, scheme=parts.scheme or "http"
        )
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.deregister_after = deregister_after
        self.wait = wait
        self._cache: dict[str, list[Endpoint]] = {}
        self._watchers: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # -- registration (the supervisor, or a service itself)

    def register(self, endpoint: Endpoint, health_path: str) -> None:
        check = consul.Check.http(
            f"{endpoint.url}{health_path}",
            self.check_interval,
            timeout=self.check_timeout,
            deregister=self.deregister_after,
        )
        self.client.agent.service.register(
            endpoint.service,
            service_id=endpoint.instance,
            address=endpoint.host,
            port=endpoint.port,
            meta=dict(endpoint.meta),
            check=check,
        )

    def deregister(self, endpoint: Endpoint) -> None:
        self.client.agent.service.deregister(endpoint.instance)

    # -- lookups

    def lookup(self, service: str, index: str | None = None) -> tuple[str, list[Endpoint]]:
        """One health-filtered query; with `index` it blocks until the result changes or `wait` passes."""
        index, entries = self.client.health.service(service, passing=True, index=index, wait=self.wait)
        return index, parse_health(service, entries)

    def endpoints(self, service: str) -> list[Endpoint]:
        cached = self._cache.get(service)
        if cached is not None:
            return list(cached)
        index, endpoints = self.lookup(service)
        with self._lock:
            self._cache[service] = endpoints
            if service not in self._watchers and not self._closed.is_set():
                thread = threading.Thread(
                    target=self._follow, args=(service, index), daemon=True, name=f"consul-{service}"
                )
                self._watchers[service] = thread
                thread.start()
        return list(endpoints)

    def _follow(self, service: str, index: str) -> None:
        """Keep the cache current with blocking queries until close()."""
        while not self._closed.is_set():
            try:
                index, endpoints = self.lookup(service, index)
                self._cache[service] = endpoints
            except Exception as exc:  # agent restarting, network: keep the last answer, try again
                log.warning("consul watch of %s failed: %s", service, exc)
                self._closed.wait(1.0)

    async def watch(self, service: str) -> AsyncIterator[list[Endpoint]]:
        index, last = await asyncio.to_thread(self.lookup, service)
        yield last
        while not self._closed.is_set():
            index, current = await asyncio.to_thread(self.lookup, service, index)
            if current != last:
                last = current
                yield current

    def close(self) -> None:
        self._closed.set()
