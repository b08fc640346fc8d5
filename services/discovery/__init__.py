"""Service discovery: where the instances of a service are, healthy ones only.

Two backends behind one small interface: static (the supervisor's table in `<run-dir>/endpoints.json`,
re-read when the file changes; the default) and Consul (py-consul: agent registration with an HTTP
check on the readiness endpoint, health-filtered lookups, blocking-query watches).
`from_env()` picks one from `MESHSERVE_DISCOVERY` (`static:/path/endpoints.json` or
`consul:http://127.0.0.1:8500`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from services.common.settings import RUN_DIR_ENV

DISCOVERY_ENV = "MESHSERVE_DISCOVERY"
ENDPOINTS_FILE = "endpoints.json"
__all__ = ["DISCOVERY_ENV", "ENDPOINTS_FILE", "METRICS_PORT_META", "RUN_DIR_ENV", "Discovery", "Endpoint", "from_env"]
METRICS_PORT_META = "metrics_port"  # endpoint metadata: the port its /metrics is on, when not `port`


@dataclass(frozen=True)
class Endpoint:
    service: str
    instance: str
    host: str
    port: int
    meta: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_json(self) -> dict[str, object]:
        return {"instance": self.instance, "host": self.host, "port": self.port, "meta": dict(self.meta)}


@runtime_checkable
class Discovery(Protocol):
    def endpoints(self, service: str) -> list[Endpoint]:
        """Healthy instances of `service` now (cheap: callers may ask per request)."""
        ...

    def register(self, endpoint: Endpoint, health_path: str) -> None: ...

    def deregister(self, endpoint: Endpoint) -> None: ...

    def watch(self, service: str) -> AsyncIterator[list[Endpoint]]:
        """Yield the healthy instances now, then again each time they change."""
        ...

    def close(self) -> None: ...


def from_env(env: Mapping[str, str] | None = None) -> Discovery:
    """The backend named by MESHSERVE_DISCOVERY; by default the static file of the run dir."""
    env = os.environ if env is None else env
    setting = env.get(DISCOVERY_ENV, "")
    kind, _, target = setting.partition(":")
    if kind == "consul":
        from services.discovery.consul import ConsulDiscovery

        return ConsulDiscovery(target or "http://127.0.0.1:8500")
    from services.discovery.static import StaticDiscovery

    if kind == "static" and target:
        return StaticDiscovery(Path(target))
    if setting and kind != "static":
        raise ValueError(f"{DISCOVERY_ENV}={setting!r}: use static:/path/to/endpoints.json or consul:http://host:8500")
    from services.common.settings import resolve_run_dir

    return StaticDiscovery(resolve_run_dir(env=env).path / ENDPOINTS_FILE)
