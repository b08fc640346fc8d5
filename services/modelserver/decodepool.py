"""Large JSON infer bodies are decoded in a separate process, so the event loop keeps serving.

A JSON parse holds the GIL from start to end (simdjson and orjson both do), so a thread would not
help: a 10 MB body would stall every other client for the whole parse. Bodies whose JSON part is
at least `OFFLOAD_BYTES` go to one worker process (spawned at start-up, `spawn` so that no
onnxruntime thread is forked); smaller ones, and binary tensors (which cost a `np.frombuffer`),
are decoded inline. One worker means one large decode at a time, which is what bounds memory:
a decode costs at most DECODE_MEMORY_FACTOR times its body (see services/modelserver/README.md),
and a second large body waits its turn instead of adding its own multiple. A body that kills the
worker is refused with 400 and a new worker is started for the next one; the server lives on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from services.common.errors import ProtocolError
from services.modelserver.codec import InferRequest, decode_request
from services.modelserver.metrics import DECODES_IN_WORKER
from services.modelserver.signature import Signature

log = logging.getLogger(__name__)

OFFLOAD_BYTES = 4 * 1024 * 1024  # below this a JSON decode takes milliseconds: inline is cheaper than a hop
DECODE_MEMORY_FACTOR = 24  # documented bound: server + worker memory for one JSON decode, in body sizes


_PR_SET_PDEATHSIG = 1


def _ready() -> bool:
    return True


def _follow(parent: int) -> None:
    """Worker initializer: die with the server, even a SIGKILLed one (PR_SET_PDEATHSIG; the worker
    is spawned from the event loop's thread, which lives as long as the server), and leave Ctrl-C to
    the server, which drains."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server was gone before the line above took effect
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DecodePool:
    def __init__(self, threshold: int = OFFLOAD_BYTES) -> None:
        self.threshold = threshold
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Spawn the worker now (a submitted no-op starts it), not on the first large request."""
        self._executor().submit(_ready)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_follow,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def decode(self, header: bytes | memoryview, binary: memoryview, signature: Signature) -> InferRequest:
        if len(header) < self.threshold:
            return decode_request(header, binary, signature)
        pool = self._executor()
        loop = asyncio.get_running_loop()
        DECODES_IN_WORKER.inc()
        try:
            return await loop.run_in_executor(pool, decode_request, bytes(header), bytes(binary), signature)
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
                log.error("the decoder process died decoding a %d-byte body; starting a new one", len(header))
                self.start()
            raise ProtocolError(400, "decoding this request body killed the decoder process; it is refused") from None
        finally:
            DECODES_IN_WORKER.dec()

    def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
