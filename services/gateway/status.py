"""The gateway's status listener (Kong's Status API, on its own port): /metrics, /healthz, /ready.

Kept off the public port: the metrics list consumers and upstream instances, which are nobody's
business but the operator's. Prometheus scrapes this port (the local plan registers it as the
gateway endpoint's `metrics_port`); the supervisor probes /ready here. /healthz is liveness,
/ready turns 503 when the gateway starts draining on SIGTERM.
"""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_JSON = (b"content-type", b"application/json")


class StatusApp:
    """A tiny raw-ASGI app; `draining` is set by the server when SIGTERM arrives."""

    def __init__(self) -> None:
        self.draining = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            status, headers, body = 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], generate_latest()
        elif path == "/healthz":
            status, headers, body = 200, [_JSON], b'{"status":"alive"}'
        elif path == "/ready":
            status = 503 if self.draining else 200
            headers, body = [_JSON], orjson.dumps({"status": "draining" if self.draining else "ready"})
        else:
            status, headers, body = 404, [_JSON], orjson.dumps({"message": f"no status endpoint {path!r}"})
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ByPort:
    """Route a connection to the app of the local port it arrived on (one server, two listeners)."""

    def __init__(self, apps: dict[int, Any], default: Any) -> None:
        self.apps = apps
        self.default = default

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        server = scope.get("server")
        app = self.apps.get(server[1], self.default) if server else self.default
        await app(scope, receive, send)
