"""Following a changed mesh.yaml, one way for every service (the gateway and the pipelines).

A background task started with the service (its lifespan) polls the file's identity
(services.common.files: inode, mtime, size) every `poll_interval` seconds, as Envoy and Kong poll or
are pushed their configuration; a request never reads the file. A changed file is read only once it
has stayed the same for `settle` seconds: an editor or a copy that is still writing it, or died
halfway, leaves a file that often still validates (consumers, routes and weights default to empty)
and must not be applied. Then the spec is parsed and validated by mesh.spec, turned into the
service's own snapshot (`build`), checked by an optional `guard` (the gateway refuses one that would
lock every consumer out while traffic flows), and handed to `apply` in one call. A file that does not
parse or validate, or that `build` rejects (ValueError), changes nothing: the old spec keeps serving,
an error is logged and the outcome reported.

Outcomes (`on_outcome`, for each service's metrics): `applied`, `invalid` (old spec kept), `refused`
(the guard said why). `Settle` is pure state with the clock passed in, so tests step it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from mesh.spec import MeshSpec, load_spec
from services.common.files import FileIdentity, file_identity

log = logging.getLogger(__name__)

POLL_S = 0.5
SETTLE_S = 0.5
APPLIED, INVALID, REFUSED = "applied", "invalid", "refused"

T = TypeVar("T")


class Settle:
    """When a changed file may be read: its new identity has been seen unchanged for `settle` seconds."""

    def __init__(self, seen: FileIdentity | None, settle: float = SETTLE_S) -> None:
        self.seen = seen  # the identity of the file last read
        self.settle = settle
        self._pending: FileIdentity | None = None
        self._since = 0.0

    def observe(self, identity: FileIdentity | None, now: float) -> bool:
        """True once for each change, when it has settled; the file is then taken as read."""
        if identity is None or identity == self.seen:
            self._pending = None  # gone (being replaced) or back as it was: nothing to read
            return False
        if identity != self._pending:
            self._pending, self._since = identity, now  # a new change, or the writer is still at it
            if self.settle > 0:
                return False
        if now - self._since < self.settle:
            return False
        self.seen, self._pending = identity, None
        return True


class SpecFollower(Generic[T]):
    """Polls `path`; a settled change becomes `build(spec)`, checked by `guard`, given to `apply`."""

    def __init__(
        self,
        path: str | Path,
        build: Callable[[MeshSpec], T],
        apply: Callable[[T], None],
        *,
        load: Callable[[Path], MeshSpec] = load_spec,
        guard: Callable[[T], str | None] | None = None,
        on_outcome: Callable[[str], None] | None = None,
        poll_interval: float = POLL_S,
        settle: float = SETTLE_S,
    ) -> None:
        self.path = Path(path)
        self.build, self.apply, self.load, self.guard = build, apply, load, guard
        self.on_outcome = on_outcome
        self.poll_interval = poll_interval
        self.settled = Settle(file_identity(self.path), settle)  # before the service's first read
        self._task: asyncio.Task | None = None

    def initial(self) -> T:
        """The service's first snapshot, read at start-up (an invalid spec raises: nothing to keep)."""
        return self.build(self.load(self.path))

    async def check(self, now: float) -> str | None:
        """One poll at `now` (monotonic seconds): the outcome when a settled change was read, else None."""
        if not self.settled.observe(file_identity(self.path), now):
            return None
        return await self.reload()

    async def reload(self) -> str:
        """Read, validate, guard and apply the file as it is now."""
        try:
            snapshot = self.build(await asyncio.to_thread(self.load, self.path))
        except ValueError as exc:  # SpecError is one; `build` raises it for a spec it cannot serve
            log.error("mesh spec change ignored, the previous spec stays in force: %s", exc)
            return self._report(INVALID)
        reason = self.guard(snapshot) if self.guard is not None else None
        if reason is not None:
            log.error("mesh spec change refused, the previous spec stays in force: %s", reason)
            return self._report(REFUSED)
        self.apply(snapshot)
        log.info("mesh spec reloaded from %s", self.path)
        return self._report(APPLIED)

    def _report(self, outcome: str) -> str:
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    async def run(self) -> None:
        """Poll until cancelled; a failure of one reload is logged and the next change is still followed."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.check(time.monotonic())
            except Exception:
                log.exception("mesh spec reload failed; the previous spec stays in force")

    def start(self) -> None:
        """Start polling on the running loop (a service's lifespan start)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"follow {self.path}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
