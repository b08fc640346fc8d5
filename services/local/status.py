"""`meshserve status`: what runs where (from the run dir's stack.json) and whether it answers its health check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson

from services.common.settings import STACK_FILE
from services.local.devices import describe, running_on, spec_devices


def pid_alive(pid: int | None) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped yet is not running)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: existence is all we can tell
    return stat.rpartition(")")[2].split()[0] != "Z"  # the state follows the parenthesised command name


def probe(rows: list[dict[str, Any]], timeout: float = 1.0) -> list[dict[str, Any]]:
    """Each process row with `alive` (pid exists) and `healthy` (its health URL answered 200)."""
    out = []
    with httpx.Client(timeout=timeout) as client:
        for row in rows:
            try:
                healthy = client.get(row["health"]).status_code == 200
            except httpx.HTTPError:
                healthy = False
            extra = {}
            if "model" in row:  # what the version really runs on (providers from its model metadata)
                base = row["health"].split("/v2/", 1)[0]
                extra["running_on"] = running_on(client, base, row["model"], row["version"]) if healthy else None
            out.append({**row, "alive": pid_alive(row.get("pid")), "healthy": healthy, **extra})
    return out


def read_stack(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STACK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is `meshserve up` running (or pass --run-dir)?")
    return orjson.loads(path.read_bytes())


def render(stack: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    devices = spec_devices(stack["spec"]) if any("model" in r for r in rows) and stack.get("spec") else {}
    header = ("SERVICE", "INSTANCE", "PID", "PORT", "HEALTHY", "RUNS ON", "HEALTH URL")
    table = [header] + [
        (
            r["service"],
            r["instance"],
            str(r["pid"]) + ("" if r["alive"] else " (gone)"),
            str(r["port"]),
            "yes" if r["healthy"] else "NO",
            describe(devices.get((r["model"], r["version"]), "cpu"), r.get("running_on")) if "model" in r else "-",
            r["health"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    supervisor = stack.get("supervisor_pid")
    state = "running" if pid_alive(supervisor) else "NOT running"
    return f"supervisor pid {supervisor} ({state}); spec {stack.get('spec')}\n" + "\n".join(lines)
