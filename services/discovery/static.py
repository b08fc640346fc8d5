"""Static discovery: the supervisor's table in a JSON file, re-read whenever the file is replaced.

Format: {"services": {"digits-v1": [{"instance": "digits-v1-0", "host": "127.0.0.1", "port": 41234,
"meta": {"version": "1"}}]}}. Writers replace the file atomically (write + rename), so readers never see
half a table; a reader checks the file's identity (inode, mtime, size) at most every `check_interval`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from services.common.files import FileIdentity, file_identity
from services.discovery import Endpoint

Table = dict[str, list[Endpoint]]


def parse_table(data: bytes) -> Table:
    services = orjson.loads(data).get("services", {})
    return {
        name: [
            Endpoint(name, e["instance"], e["host"], int(e["port"]), {k: str(v) for k, v in e.get("meta", {}).items()})
            for e in entries
        ]
        for name, entries in services.items()
    }


def write_table(path: Path, table: Table) -> None:
    """Replace the file atomically with `table` (services sorted, instances in the given order)."""
    body = {"services": {name: [e.to_json() for e in table[name]] for name in sorted(table)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StaticDiscovery:
    """Reads (and, for the supervisor, writes) the endpoints file; every listed instance counts as healthy."""

    def __init__(self, path: Path, *, check_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._identity: FileIdentity | None = None
        self._table: Table = {}
        self._checked = 0.0
        self._lock = threading.Lock()

    def _refresh(self, force: bool = False) -> Table:
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return self._table
        self._checked = now
        identity = file_identity(self.path)
        if identity is None:
            self._identity, self._table = None, {}
            return self._table
        if identity != self._identity:
            try:
                self._table = parse_table(self.path.read_bytes())
                self._identity = identity
            except (OSError, ValueError, KeyError):
                pass  # keep the last good table; the next check tries again
        return self._table

    def endpoints(self, service: str) -> list[Endpoint]:
        return list(self._refresh().get(service, ()))

    def services(self) -> Table:
        return dict(self._refresh(force=True))

    def register(self, endpoint: Endpoint, health_path: str = "/ready") -> None:
        """Add or replace `endpoint` (by instance) in the file. Single writer: the supervisor."""
        with self._lock:
            table = {k: list(v) for k, v in self._refresh(force=True).items()}
            entries = [e for e in table.get(endpoint.service, []) if e.instance != endpoint.instance]
            table[endpoint.service] = sorted([*entries, endpoint], key=lambda e: e.instance)
            write_table(self.path, table)
            self._refresh(force=True)

    def deregister(self, endpoint: Endpoint) -> None:
        with self._lock:
            table = {k: list(v) for k, v in self._refresh(force=True).items()}
            table[endpoint.service] = [e for e in table.get(endpoint.service, []) if e.instance != endpoint.instance]
            write_table(self.path, table)
            self._refresh(force=True)

    async def watch(self, service: str, *, poll: float = 0.2) -> AsyncIterator[list[Endpoint]]:
        last = self.endpoints(service)
        yield last
        while True:
            await asyncio.sleep(poll)
            current = self._refresh(force=True).get(service, [])
            if current != last:
                last = list(current)
                yield last

    def close(self) -> None:
        pass
