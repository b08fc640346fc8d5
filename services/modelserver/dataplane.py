"""The model server's data plane: one infer path under every protocol (REST today, gRPC beside it).

Admission (draining, requests in flight), routing to a serving version, decode, the batcher, encode
and the per-version counts live here; a transport only turns its own bytes into a `decode` and an
`encode` callable and its errors into its own status codes. Both transports therefore count, drain
and time requests the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from services.common.errors import ProtocolError
from services.modelserver.codec import InferRequest
from services.modelserver.decodepool import DecodePool
from services.modelserver.repository import Repository, ServingVersion

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_AFTER = ((b"retry-after", b"1"),)
# (name, datatype, array, binary) in the order the request asked for them
Output = tuple[str, str, np.ndarray, bool]
# decode(*payload, signature): an InferRequest, or an awaitable of one when offloaded
Decode = Callable[..., InferRequest | Awaitable[InferRequest]]
Encode = Callable[[ServingVersion, InferRequest, list[Output]], T]
_OUTCOMES = {503: "rejected", 504: "timeout"}


@dataclass
class Settings:
    repository: Path
    models: dict[str, int | None] = field(default_factory=dict)  # --model filter
    config_overrides: dict[str, dict] = field(default_factory=dict)  # --config-override
    poll_interval: float = 2.0
    max_body_bytes: int = 64 * 1024 * 1024
    require_device: str | None = None  # --require-device: refuse versions that run elsewhere (GPU pods)


def draining_error() -> ProtocolError:
    return ProtocolError(503, "server is shutting down; retry elsewhere", RETRY_AFTER)


def outcome_of(exc: ProtocolError) -> str:
    """The metrics outcome of a refused request (503 rejected, 504 timeout, anything else error)."""
    return _OUTCOMES.get(exc.status, "error")


class DataPlane:
    """What every transport's infer path and the shutdown path share: the repository, draining,
    requests in flight, and the infer orchestration itself."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository = Repository(
            settings.repository, settings.models or None, settings.config_overrides, settings.require_device
        )
        self.draining = False
        self.active = 0  # infer requests whose body has arrived and that are not yet answered (every transport)
        self.decoder = DecodePool()  # large JSON bodies decoded in another process (decodepool.py)

    def ready(self) -> bool:
        return not self.draining and self.repository.ready()

    # ------------------------------------------------------------ admission

    def refuse_if_draining(self) -> None:
        """For a transport to call before a request's body arrives (readiness is already false)."""
        if self.draining:
            raise draining_error()

    # ------------------------------------------------------------ infer

    async def infer(
        self,
        model: str,
        version: str | None,
        decode: Decode,
        payload: tuple,
        encode: Encode[T],
        start: float,
        offloaded: bool = False,
    ) -> T:
        """Admit, route, decode, batch and run, encode; counts the outcome and the time since `start`.

        Called once the request's body has arrived: from here it counts as in flight for the drain (a
        slow sender must not hold it). `decode(*payload, signature)` is the transport's decoder. From
        routing to the batcher's queue nothing awaits unless `offloaded`: then `decode` is awaited (a
        large JSON body decoded in another process) and the version is looked up again after it, so
        one swapped or unloaded meanwhile is never picked up half-closed.
        """
        if self.draining:
            raise draining_error()
        self.active += 1
        serving: ServingVersion | None = None
        outcome = "error"
        try:
            serving = self.repository.get(model, version)
            if offloaded:
                request = await decode(*payload, serving.signature)
                current = self.repository.get(model, version)
                if current is not serving:
                    if current.signature != serving.signature:
                        request = await decode(*payload, current.signature)
                    serving = current
            else:
                request = decode(*payload, serving.signature)
            results = await serving.batcher.infer(request)
            outputs = serving.signature.outputs
            answer = encode(
                serving,
                request,
                [(name, outputs[name].datatype, results[name], binary) for name, binary in request.outputs],
            )
            outcome = "success"
            return answer
        except ProtocolError as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            self.active -= 1
            if serving is not None:
                metrics = serving.metrics
                metrics.outcome[outcome].inc()
                elapsed = time.perf_counter() - start
                metrics.request_time.observe(elapsed)
                metrics.stats.request(outcome == "success", elapsed)

    # ------------------------------------------------------------ lifecycle

    def begin_drain(self) -> None:
        """Readiness goes false and new infer requests get 503; queued ones go out without delay."""
        if not self.draining:
            self.draining = True
            log.info("draining: readiness false, refusing new infer requests", extra={"in_flight": self.active})
        self.repository.start_flush()
