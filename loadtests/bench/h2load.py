"""gRPC load with h2load (nghttp2's HTTP/2 benchmark, C, one thread): a pre-encoded ModelInfer call.

A unary gRPC call is an HTTP/2 POST of one length-prefixed protobuf message with `content-type:
application/grpc` and `te: trailers`; h2load replays the same bytes on `-c` connections, one
stream each (closed loop, like wrk). Its per-request log gives the latency percentiles. gRPC
errors travel in trailers that h2load does not read, so callers check an answer with a real gRPC
client before loading, and compare the server's success count after.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from loadtests.bench.process import pinned

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load_command(url: str, body: Path, connections: int, seconds: float, warmup: float, log: Path) -> list[str]:
    cmd = ["h2load", "-t", "1", "-c", str(connections), "-m", "1", "-d", str(body), f"--log-file={log}"]
    cmd += ["-D", f"{seconds:g}", f"--warm-up-time={warmup:g}"]
    for header in GRPC_HEADERS:
        cmd += ["-H", header]
    return [*cmd, url]


def summarize(log_text: str, seconds: float, connections: int) -> dict:
    """Requests per second and latency percentiles from h2load's log (start us, status, duration us)."""
    rows = [line.split("\t") for line in log_text.splitlines() if line.strip()]
    durations = np.array([int(r[2]) for r in rows], dtype=np.float64) / 1000.0
    failed = sum(1 for r in rows if not r[1].startswith("2"))
    count = len(rows)
    return {
        "concurrency": connections,
        "requests": count,
        "seconds": seconds,
        "rps": round(count / seconds, 1) if seconds else 0.0,
        "p50_ms": round(float(np.percentile(durations, 50)), 3) if count else 0.0,
        "p99_ms": round(float(np.percentile(durations, 99)), 3) if count else 0.0,
        "failed": failed,
    }


def run_h2load(url: str, body: Path, connections: int, seconds: float, warmup: float, core: int | None) -> dict:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log = Path(tmp) / "requests.log"
        cmd = h2load_command(url, body, connections, seconds, warmup, log)
        done = subprocess.run(pinned(cmd, core), capture_output=True, text=True, check=False)
        if done.returncode != 0 or not log.exists():
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
        return summarize(log.read_text(), seconds, connections)
