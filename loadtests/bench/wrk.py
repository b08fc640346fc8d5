"""Drive `wrk` with a fixed POST body and read back the JSON its Lua `done` hook prints.

wrk is a closed-loop generator: each of N connections sends its next request when the previous
answer arrives, so "concurrency" below is wrk's connection count. One wrk thread is plenty on
one pinned core (it sustains far more than any Python server here).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from loadtests.bench.process import pinned

POST_LUA = Path(__file__).with_name("post.lua")
MARKER = "WRK_JSON "


def wrk_command(
    url: str,
    body_path: Path,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    core: int | None,
    timeout_s: float = 30.0,
) -> list[str]:
    """The command line: one thread, N connections, a bounded duration, our Lua script."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={round(timeout_s)}s",
        "-s",
        str(POST_LUA),
        url,
        "--",
        str(body_path),
        *(f"{name}={value}" for name, value in headers.items()),
    ]
    return pinned(cmd, core)


def parse_wrk_output(stdout: str) -> dict:
    """The summary printed by post.lua's `done` hook; ValueError if wrk printed none."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    raise ValueError(f"no {MARKER.strip()} line in wrk output:\n{stdout[-2000:]}")


def summarize(raw: dict, connections: int) -> dict:
    """Throughput of successful answers and latency in ms from one wrk summary."""
    errors = raw["errors"]
    failed = errors["status"] + errors["timeout"] + errors["connect"] + errors["read"] + errors["write"]
    seconds = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    ok = max(0, raw["requests"] - errors["status"])
    return {
        "concurrency": connections,
        "requests": raw["requests"],
        "failed": failed,
        "errors": errors,
        "seconds": round(seconds, 3),
        "rps": round(ok / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": latency["p50"] / 1000,
        "p90_ms": latency["p90"] / 1000,
        "p99_ms": latency["p99"] / 1000,
        "mean_ms": round(latency["mean"] / 1000, 3),
        "max_ms": latency["max"] / 1000,
    }


def run_wrk(
    url: str,
    body_path: Path,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    core: int | None = None,
) -> dict:
    """Run one bounded load point and return `summarize`'s dict."""
    cmd = wrk_command(url, body_path, headers, connections, seconds, core)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout[-500:]}")
    return summarize(parse_wrk_output(done.stdout), connections)
