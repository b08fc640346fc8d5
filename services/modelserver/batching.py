"""Dynamic batcher: one asyncio task per model version.

Requests wait in a bounded FIFO queue. Whenever an instance is free, the batcher takes the oldest
request plus the later ones it can be concatenated with (same non-batch shapes), up to
max_batch_size rows. It dispatches at once when that fills max_batch_size or a preferred size, and
otherwise waits for more until the oldest request has waited max_queue_delay. Results are sliced
back to the waiting requests, so a response equals the same request served alone.

Admission: past max_queue_size a request is refused at once (503 + Retry-After); a request still
queued at its timeout is answered 504 and never executed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Future as ThreadFuture

import numpy as np

from services.common.errors import ProtocolError
from services.common.tracing import record_span, tracing_enabled
from services.modelserver.codec import InferRequest
from services.modelserver.config import ModelConfig
from services.modelserver.health import FailureWindow
from services.modelserver.metrics import VersionMetrics
from services.modelserver.runtime import Runtime

log = logging.getLogger(__name__)

_RETRY_AFTER = ((b"retry-after", b"1"),)
_SCAN_LIMIT = 512  # how deep one batch formation looks past incompatible requests


TIMER_TICK = 0.001  # uvloop (libuv) timers have millisecond resolution


def timer_wait(remaining: float) -> float | None:
    """How long to sleep for the rest of the queue delay, or None when it is over.

    The loop's timers tick in whole milliseconds: a shorter `call_later` fires on the next loop
    iteration, so waiting out 300 us that way spins the loop at 100 % CPU. A remaining wait under
    half a tick therefore counts as over; any longer one sleeps at least one tick.
    """
    if remaining < TIMER_TICK / 2:
        return None
    return max(remaining, TIMER_TICK)


class Pending:
    __slots__ = ("batch", "dispatched", "enqueued", "executed", "future", "key", "request", "timer")

    def __init__(self, request: InferRequest, key: tuple, future: asyncio.Future, enqueued: float) -> None:
        self.request = request
        self.batch = request.batch
        self.key = key
        self.future = future
        self.enqueued = enqueued
        self.timer: asyncio.TimerHandle | None = None
        self.dispatched = 0.0
        self.executed: tuple[float, float, int, int] | None = None  # start, end, rows, requests (tracing)


class Batcher:
    def __init__(
        self,
        runtime: Runtime,
        config: ModelConfig,
        metrics: VersionMetrics,
        label: str,
        health: FailureWindow | None = None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.health = health if health is not None else FailureWindow()
        self.label = label
        self.loop = asyncio.get_running_loop()
        self.max_batch = config.max_batch_size
        dynamic = config.dynamic_batching if config.max_batch_size > 0 else None
        self.dynamic = dynamic is not None
        self.delay = dynamic.max_queue_delay_microseconds / 1e6 if dynamic else 0.0
        self.preferred = frozenset(p for p in (dynamic.preferred_batch_size if dynamic else ()) if p <= self.max_batch)
        policy = config.default_queue_policy
        self.max_queue = policy.max_queue_size or float("inf")
        self.default_timeout_us = policy.default_timeout_microseconds
        self.allow_override = policy.allow_timeout_override
        self.input_names = list(runtime.signature.inputs)
        self.free = runtime.instances
        self.running = 0
        self.queue: deque[Pending] = deque()
        self.closing = False
        self.flush = False  # dispatch without waiting for the queue delay (draining)
        self._wake = asyncio.Event()
        self._task = self.loop.create_task(self._run(), name=f"batcher-{label}")
        self._task.add_done_callback(self._stopped)

    # ------------------------------------------------------------ request side

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        if self.closing:
            raise ProtocolError(503, f"{self.label} is unloading; retry", _RETRY_AFTER)
        if len(self.queue) >= self.max_queue:
            raise ProtocolError(503, f"{self.label}: queue is full ({len(self.queue)} waiting)", _RETRY_AFTER)
        inputs = request.inputs
        key = tuple(inputs[n].shape[1:] for n in self.input_names) if self.max_batch else ()
        traced = tracing_enabled()
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds
        pending = Pending(request, key, self.loop.create_future(), time.perf_counter())
        timeout_us = request.timeout_us if self.allow_override and request.timeout_us else self.default_timeout_us
        if timeout_us:
            pending.timer = self.loop.call_later(timeout_us / 1e6, self._expire, pending, timeout_us)
        self.queue.append(pending)
        self.metrics.queue_depth.inc()
        self.metrics.in_flight.inc()
        self._wake.set()
        try:
            result = await pending.future
            if traced:
                _trace_batching(pending, pending.enqueued)
            return result
        finally:
            self.metrics.in_flight.dec()

    def _expire(self, pending: Pending, timeout_us: int) -> None:
        try:
            self.queue.remove(pending)
        except ValueError:
            return  # already dispatched: it finishes
        self.metrics.queue_depth.dec()
        if not pending.future.done():
            pending.future.set_exception(
                ProtocolError(504, f"{self.label}: request timed out after {timeout_us} us in the queue")
            )

    # ------------------------------------------------------------ batcher task

    async def _run(self) -> None:
        loop = self.loop
        while True:
            if not self.queue or not self.free:
                if self.closing and not self.queue and not self.running:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take(force=self.flush or not self.dynamic)
            if batch is None:
                wait = timer_wait(self.queue[0].enqueued + self.delay - time.perf_counter())
                if wait is not None:
                    self._wake.clear()
                    timer = loop.call_later(wait, self._wake.set)
                    await self._wake.wait()
                    timer.cancel()
                    continue
                batch = self._take(force=True)
            self._dispatch(batch)

    def _take(self, force: bool) -> list[Pending] | None:
        """Requests for the next execution, or None to wait for more (only before the delay ends)."""
        queue = self.queue
        head = queue[0]
        if not self.dynamic:
            queue.popleft()
            return [head]
        key, limit, preferred = head.key, self.max_batch, self.preferred
        chosen: list[Pending] = []
        total = 0
        preferred_at = 0
        contiguous = True
        for i, pending in enumerate(queue):
            if i >= _SCAN_LIMIT:
                break
            if pending.key != key:
                contiguous = False
                continue
            if total + pending.batch > limit:
                break
            chosen.append(pending)
            total += pending.batch
            if total in preferred:
                preferred_at = len(chosen)
            if total == limit:
                break
        if total < limit:
            if preferred_at:
                chosen = chosen[:preferred_at]
            elif not force:
                return None
        if contiguous:
            for _ in chosen:
                queue.popleft()
        else:
            taken = {id(p) for p in chosen}
            self.queue = deque(p for p in queue if id(p) not in taken)
        return chosen

    def _dispatch(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        observe = metrics.queue_time.observe
        waited_all = 0.0
        for pending in batch:
            if pending.timer is not None:
                pending.timer.cancel()
            waited = started - pending.enqueued
            observe(waited)
            waited_all += waited
            pending.dispatched = started
        metrics.stats.queued(len(batch), waited_all)
        metrics.queue_depth.dec(len(batch))
        self.free -= 1
        self.running += 1
        names: list[str] = []
        for pending in batch:
            for name, _ in pending.request.outputs:
                if name not in names:
                    names.append(name)
        future = self.runtime.executor.submit(self._compute, [p.request.inputs for p in batch], names)
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._scatter, batch, names, f))

    def _compute(self, feeds: list[dict[str, np.ndarray]], names: list[str]) -> tuple[list[np.ndarray], float, float]:
        """Executor thread: concatenate along the batch dim (if more than one request) and run.
        Returns the outputs, the whole time and the concatenation's share of it."""
        start = time.perf_counter()
        merged = feeds[0] if len(feeds) == 1 else {n: np.concatenate([f[n] for f in feeds]) for n in self.input_names}
        merged_at = time.perf_counter()
        outputs = self.runtime.run(merged, names)
        return outputs, time.perf_counter() - start, merged_at - start

    def _scatter(self, batch: list[Pending], names: list[str], future: ThreadFuture) -> None:
        self.free += 1
        self.running -= 1
        self._wake.set()
        rows = sum(p.batch for p in batch)
        try:
            outputs, seconds, input_seconds = future.result()
            if self.max_batch:
                for name, arr in zip(names, outputs, strict=True):
                    if arr.ndim == 0 or arr.shape[0] != rows:
                        raise RuntimeError(f"output {name!r} has shape {list(arr.shape)} for a batch of {rows}")
        except Exception as exc:
            error = _runtime_error(self.label, exc)
            if error.status >= 500:
                self._failed()
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        metrics = self.metrics
        health = self.health
        was = health.healthy
        health.record(False)
        if not was and health.healthy:
            metrics.healthy.set(1)
            log.info("%s is healthy again (%s)", self.label, health.describe())
        metrics.compute.observe(seconds)
        metrics.batch_size.observe(rows)
        metrics.inferences.inc(rows)
        metrics.executions.inc()
        done = time.perf_counter()
        for pending in batch:
            pending.executed = (done - seconds, done, rows, len(batch))
        if len(batch) == 1:
            results = [dict(zip(names, outputs, strict=True))]
        else:
            results = []
            offset = 0
            for pending in batch:
                end = offset + pending.batch
                results.append({n: a[offset:end] for n, a in zip(names, outputs, strict=True)})
                offset = end
        metrics.stats.executed(rows, len(batch), input_seconds, seconds - input_seconds, time.perf_counter() - done)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def _failed(self) -> None:
        """An execution failed inside the server: counted, and the version's health follows."""
        self.metrics.execution_failures.inc()
        health = self.health
        was = health.healthy
        health.record(True)
        if was and not health.healthy:
            self.metrics.healthy.set(0)
            log.error("%s is failing (%s): no unversioned traffic while another version is healthy",
                      self.label, health.describe())  # fmt: skip

    def _stopped(self, task: asyncio.Task) -> None:
        """A batcher that dies of a bug must not leave its queued requests waiting forever."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s: batcher failed", self.label, exc_info=task.exception())
        self.closing = True
        while self.queue:
            pending = self.queue.popleft()
            self.metrics.queue_depth.dec()
            if not pending.future.done():
                pending.future.set_exception(ProtocolError(500, f"{self.label}: batcher failed"))

    # ------------------------------------------------------------ lifecycle

    def start_flush(self) -> None:
        """Stop waiting for the queue delay: every queued request goes out as soon as an instance is free."""
        self.flush = True
        self._wake.set()

    async def drain(self) -> None:
        """Refuse new requests, finish queued and running ones, then release the sessions."""
        self.closing = True
        self.start_flush()
        await self._task
        await asyncio.to_thread(self.runtime.close)


def _trace_batching(pending: Pending, enqueued: float) -> None:
    """The request's queue wait and its share of a batch execution as spans (batch size attached)."""
    to_ns = time.time_ns() - int(time.perf_counter() * 1e9)  # perf_counter -> epoch nanoseconds
    record_span("queue", to_ns + int(enqueued * 1e9), to_ns + int(pending.dispatched * 1e9))
    if pending.executed is not None:
        start, end, rows, requests = pending.executed
        attributes = {"meshserve.batch_size": rows, "meshserve.batch_requests": requests}
        record_span("compute", to_ns + int(start * 1e9), to_ns + int(end * 1e9), attributes)


def _runtime_error(label: str, exc: BaseException) -> ProtocolError:
    # onnxruntime raises InvalidArgument for inputs it rejects (e.g. an index out of range): the
    # client's fault, so 400; anything else is the server's.
    kind = type(exc).__name__
    status = 400 if kind in ("InvalidArgument", "InvalidGraph") else 500
    log.log(logging.WARNING if status == 400 else logging.ERROR, "%s: inference failed: %s", label, exc)
    return ProtocolError(status, f"{label}: inference failed: {kind}: {exc}")
