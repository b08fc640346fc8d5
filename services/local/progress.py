"""What `meshserve up` shows while the stack starts: each process as it starts and becomes ready.

On a terminal, a live table (rich) redrawn in place; otherwise (a pipe, a CI log) one plain line per
change, so a log reader sees the same facts in order. Everything goes to stderr: stdout carries only
the final endpoints and the request to paste.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from services.local.supervisor import Managed


class Progress:
    """A supervisor progress callback: `progress(managed, state)`; `close()` when start-up is over."""

    def __init__(self, total: int, stream: IO[str] | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.rows: dict[str, tuple[str, str, int, float]] = {}  # instance -> (service, state, port, seconds)
        self._live: Any = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._table(), console=Console(file=self.stream), refresh_per_second=8, transient=False)
            self._live.start()

    def __call__(self, managed: Managed, state: str) -> None:
        spec = managed.spec
        elapsed = time.monotonic() - self.started
        self.rows[spec.instance] = (spec.service, state, spec.port, elapsed)
        if self._live is not None:
            self._live.update(self._table())
            return
        ready = sum(1 for row in self.rows.values() if row[1] == "ready")
        line = f"meshserve up: {spec.instance:28} {state:8} port {spec.port:<5} {elapsed:5.1f}s"
        print(f"{line}  ({ready}/{self.total} ready)", file=self.stream, flush=True)

    def _table(self) -> Any:
        from rich.table import Table

        ready = sum(1 for row in self.rows.values() if row[1] == "ready")
        table = Table(title=f"meshserve up: {ready}/{self.total} ready", title_justify="left", box=None)
        for column in ("instance", "service", "port", "state", "after"):
            table.add_column(column)
        for instance, (service, state, port, seconds) in self.rows.items():
            style = "green" if state == "ready" else "yellow"
            table.add_row(instance, service, str(port), f"[{style}]{state}[/{style}]", f"{seconds:.1f}s")
        return table

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
