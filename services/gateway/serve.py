"""Start the gateway under uvicorn, tuned for a proxy: uvloop, httptools, no access log."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from services.common.lifecycle import follow_supervisor
from services.common.telemetry import configure_logging
from services.common.tracing import configure_tracing, trace_asgi
from services.discovery import Discovery, from_env
from services.gateway.app import MAX_BODY_BYTES, Gateway

SERVICE = "gateway"


def build_app(
    spec_path: str | Path, discovery: Discovery | None = None, *, max_body_bytes: int = MAX_BODY_BYTES
) -> Gateway:
    """The gateway ASGI app for a spec; discovery from MESHSERVE_DISCOVERY unless given."""
    return Gateway(spec_path, discovery if discovery is not None else from_env(), max_body_bytes=max_body_bytes)


def serve(
    spec_path: str | Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    max_body_bytes: int = MAX_BODY_BYTES,
    grpc_port: int = 0,
) -> None:
    """Run until SIGINT/SIGTERM; `port` defaults to the spec's gateway.port; `grpc_port` 0 = no gRPC."""
    configure_logging(SERVICE)
    configure_tracing(SERVICE)
    gateway = build_app(spec_path, max_body_bytes=max_body_bytes)
    app = trace_asgi(gateway)
    if grpc_port:
        from services.gateway.grpc_proxy import WithGrpc

        app = WithGrpc(app, gateway, host, grpc_port)
    follow_supervisor()
    uvicorn.run(
        app,
        host=host,
        port=port or gateway.policy.spec.gateway.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=4096,
        timeout_keep_alive=30,
        proxy_headers=False,
    )
