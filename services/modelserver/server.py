"""Run the model server under uvicorn (uvloop + httptools, no access log) with a graceful drain.

SIGTERM/SIGINT: readiness turns false and new infer requests get 503 + Retry-After at once; queued
requests are dispatched without waiting for their queue delay; when nothing is in flight (and the
optional grace period has passed) uvicorn stops and the process exits 0. A second signal forces exit.
An infer request counts as in flight once its body has arrived: a client still sending (or one that
never finishes) holds the shutdown for UNFINISHED_REQUEST_GRACE at most, and is then disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import FrameType

import uvicorn

from services.common.lifecycle import follow_supervisor
from services.modelserver.app import InferenceApp, Settings, build_app

log = logging.getLogger(__name__)

UNFINISHED_REQUEST_GRACE = 1.0  # seconds uvicorn waits, after the drain, for requests still arriving


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: InferenceApp, grace: float, limit: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace = grace
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task | None = None

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

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
        state = self.app.state
        started = time.monotonic()
        state.begin_drain()
        await state.wait_idle(self.grace, self.limit)
        log.info("drained; shutting down")
        # Every infer request whose body arrived is answered: what uvicorn would still wait for is a
        # body still arriving (a slow sender) or a quick metadata call, so it gets a second at most,
        # and never more than is left of the drain limit.
        left = self.limit - (time.monotonic() - started)
        self.config.timeout_graceful_shutdown = min(max(left, 0.1), UNFINISHED_REQUEST_GRACE)
        self.should_exit = True


def serve(settings: Settings, host: str, port: int, drain_grace: float = 0.0, drain_limit: float = 30.0) -> int:
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
    server = DrainingServer(config, app, drain_grace, drain_limit)
    follow_supervisor()
    server.run()
    return 0 if server.started else 1
