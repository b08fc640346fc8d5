"""Start the gateway under uvicorn, tuned for a proxy: uvloop, guarded httptools, no access log.

One uvicorn server with two listeners: the public port (routes only) and the status port
(services.gateway.status: /metrics, /healthz, /ready), told apart by the local port a connection
arrived on. SIGTERM: /ready turns 503, after `drain_grace` seconds no new connection is accepted,
requests in flight finish within `drain_limit` seconds (then they are cancelled) and the process
exits 0, as every other meshserve service does (services.common.httpserver.DrainingServer).
"""

from __future__ import annotations

import socket
from pathlib import Path

from services.common.httpserver import DrainingServer, config
from services.common.lifecycle import follow_supervisor
from services.common.telemetry import configure_logging
from services.common.tracing import configure_tracing, trace_asgi
from services.discovery import Discovery, from_env
from services.gateway.app import Gateway
from services.gateway.bodylimit import MAX_BODY_BYTES
from services.gateway.status import ByPort, StatusApp

SERVICE = "gateway"
BACKLOG = 4096


def build_app(
    spec_path: str | Path, discovery: Discovery | None = None, *, max_body_bytes: int = MAX_BODY_BYTES
) -> Gateway:
    """The gateway ASGI app for a spec; discovery from MESHSERVE_DISCOVERY unless given."""
    return Gateway(spec_path, discovery if discovery is not None else from_env(), max_body_bytes=max_body_bytes)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port), backlog=BACKLOG)
    sock.set_inheritable(True)
    return sock


def serve(
    spec_path: str | Path,
    *,
    port: int | None = None,
    status_port: int = 0,
    host: str = "127.0.0.1",
    max_body_bytes: int = MAX_BODY_BYTES,
    drain_grace: float = 0.0,
    drain_limit: float = 10.0,
    grpc_port: int = 0,
) -> int:
    """Until SIGINT/SIGTERM; `port` defaults to the spec's gateway.port; `status_port` 0 = any; `grpc_port` 0 = off."""
    configure_logging(SERVICE)
    configure_tracing(SERVICE)
    gateway = build_app(spec_path, max_body_bytes=max_body_bytes)
    status = StatusApp()
    public = _listen(host, port or gateway.policy.spec.gateway.port)
    status_sock = _listen(host, status_port)
    public_app = trace_asgi(gateway)
    if grpc_port:
        from services.gateway.grpc_proxy import WithGrpc

        public_app = WithGrpc(public_app, gateway, host, grpc_port)
    app = ByPort({status_sock.getsockname()[1]: status}, public_app)
    server = DrainingServer(
        config(
            app,
            date_header=False,
            backlog=BACKLOG,
            timeout_keep_alive=30,
            proxy_headers=False,
            timeout_graceful_shutdown=max(drain_limit, 0.1),
        ),
        on_drain=lambda: setattr(status, "draining", True),
        grace=drain_grace,
    )
    follow_supervisor()
    server.run(sockets=[public, status_sock])
    return 0 if server.started else 1
