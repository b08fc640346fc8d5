"""Run the model server under uvicorn (uvloop + httptools, no access log) with a graceful drain.

With `exit_on_load_failure` (`serve --exit-on-load-failure`, which the local supervisor asks for), a
process pinned to models (`--model`) exits 1 when they fail their first load: it has nothing to serve,
and the exit with the load error in its log is what the supervisor can report at once. Without it the
server stays up, not ready, and reports the failure in the repository index (hot reload may fix it).

SIGTERM/SIGINT: readiness turns false and new infer requests get 503 + Retry-After at once; queued
requests are dispatched without waiting for their queue delay; when nothing is in flight (and the
optional grace period has passed) uvicorn stops and the process exits 0. A second signal forces exit.
The gRPC listener (--grpc-port) shares the data plane, so it drains the same way: new calls get
UNAVAILABLE, calls in flight finish (no CANCELED), then it stops before the repository closes.
An infer request counts as in flight once its body has arrived: a client still sending (or one that
never finishes) holds the shutdown for UNFINISHED_REQUEST_GRACE at most, and is then disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import uvicorn

from services.common.httpserver import DrainingServer
from services.common.httpserver import config as http_config
from services.common.lifecycle import follow_supervisor
from services.modelserver.app import InferenceApp, build_app
from services.modelserver.dataplane import Settings

log = logging.getLogger(__name__)

UNFINISHED_REQUEST_GRACE = 1.0  # seconds uvicorn waits, after the drain, for requests still arriving


@dataclass(frozen=True)
class GrpcOptions:
    port: int = 0  # 0: no gRPC listener
    max_message_bytes: int = 0  # 0: the REST body limit (never less)


class ModelServer(DrainingServer):
    """The shared lifecycle (services.common.httpserver.DrainingServer) with what the model server adds:
    in flight means the data plane's requests whose body arrived, a gRPC listener on the same loop,
    and the exit when pinned models fail their first load."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: InferenceApp,
        grace: float,
        limit: float,
        exit_on_load_failure: bool = False,
        grpc: GrpcOptions = GrpcOptions(),
    ) -> None:
        plane = app.plane
        super().__init__(
            config,
            on_drain=plane.begin_drain,
            grace=grace,
            in_flight=lambda: plane.active,
            limit=limit,
            unfinished_grace=UNFINISHED_REQUEST_GRACE,
        )
        self.exit_on_load_failure = exit_on_load_failure
        self.app = app
        self.grpc_options = grpc
        self.grpc_server: object | None = None
        self._load_check: asyncio.Task | None = None
        self.load_failed = False

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.grpc_options.port and not self.should_exit:
            await self._start_grpc()
        if self.started and self.exit_on_load_failure and self.app.plane.repository.only:
            self._load_check = asyncio.get_running_loop().create_task(self._exit_unless_loaded())

    async def _exit_unless_loaded(self) -> None:
        repository = self.app.plane.repository
        while not repository.scanned:  # the first scan runs in the lifespan; start-up only
            await asyncio.sleep(0.05)
        for name in repository.only or {}:
            record = repository.models.get(name)
            if record is None or not record.serving:
                why = repository._why(record) if record is not None else ""
                log.error("--model %s did not load%s: nothing to serve, exiting", name, why, extra={"model": name})
                self.load_failed = True
        self.should_exit = self.should_exit or self.load_failed

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


def serve(
    settings: Settings,
    host: str,
    port: int,
    drain_grace: float = 0.0,
    drain_limit: float = 30.0,
    exit_on_load_failure: bool = False,
    grpc: GrpcOptions = GrpcOptions(),
) -> int:
    app = build_app(settings)
    # Header caps, read timeouts, no trailers: services.common.httpserver (uvloop, httptools, no access log).
    config = http_config(app, host=host, port=port, timeout_graceful_shutdown=max(drain_limit, 1.0))
    server = ModelServer(config, app, drain_grace, drain_limit, exit_on_load_failure, grpc)
    follow_supervisor()
    server.run()
    return 0 if server.started and not server.load_failed else 1
