"""Run the model server under uvicorn (uvloop + httptools, no access log) with a graceful drain.

SIGTERM/SIGINT: readiness turns false and new infer requests get 503 + Retry-After at once; queued
requests are dispatched without waiting for their queue delay; when nothing is in flight (and the
optional grace period has passed) uvicorn stops and the process exits 0. A second signal forces exit.
The gRPC listener (--grpc-port) shares the data plane, so it drains the same way: new calls get
UNAVAILABLE, calls in flight finish (no CANCELED), then it stops before the repository closes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import FrameType

import uvicorn

from services.common.lifecycle import follow_supervisor
from services.modelserver.app import InferenceApp, build_app
from services.modelserver.dataplane import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrpcOptions:
    port: int = 0  # 0: no gRPC listener
    max_message_bytes: int = 0  # 0: the REST body limit (never less)


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, app: InferenceApp, grace: float, limit: float, grpc: GrpcOptions = GrpcOptions()
    ) -> None:
        super().__init__(config)
        self.app = app
        self.grace = grace
        self.limit = limit
        self.grpc_options = grpc
        self.grpc_server: object | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task | None = None

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.grpc_options.port and not self.should_exit:
            await self._start_grpc()

    async def _start_grpc(self) -> None:
        """The gRPC listener beside HTTP, on this loop and the same data plane."""
        from services.modelserver.app import EXTENSIONS, SERVER_NAME, SERVER_VERSION
        from services.modelserver.grpc_server import build_server

        server, port = build_server(
            self.app.plane,
            self.config.host,
            self.grpc_options.port,
            self.grpc_options.max_message_bytes,
            (SERVER_NAME, SERVER_VERSION, EXTENSIONS),
        )
        await server.start()
        self.grpc_server = server
        log.info("gRPC listening on %s:%d", self.config.host, port, extra={"grpc_port": port})

    async def shutdown(self, sockets: list | None = None) -> None:
        # gRPC first: the drain already waited for in-flight calls (both transports), so stop() only
        # closes idle connections and open streams, before the lifespan closes the repository.
        if self.grpc_server is not None:
            await self.grpc_server.stop(max(self.limit, 1.0))  # type: ignore[attr-defined]
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Replaces uvicorn's handler, which would stop accepting at once and re-raise the signal
        # after shutdown (exit status 143 instead of 0).
        if self._draining or self._loop is None:
            self.force_exit = self._draining
            self.should_exit = True
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        plane = self.app.plane
        plane.begin_drain()
        await plane.wait_idle(self.grace, self.limit)
        log.info("drained; shutting down")
        self.should_exit = True


def serve(
    settings: Settings,
    host: str,
    port: int,
    drain_grace: float = 0.0,
    drain_limit: float = 30.0,
    grpc: GrpcOptions = GrpcOptions(),
) -> int:
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,  # keep the ECS JSON logging set up by services.common.telemetry
        server_header=False,
        timeout_graceful_shutdown=max(drain_limit, 1.0),
    )
    server = DrainingServer(config, app, drain_grace, drain_limit, grpc)
    follow_supervisor()
    server.run()
    return 0 if server.started else 1
