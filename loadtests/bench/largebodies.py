"""p99 of small requests while 10 MB JSON bodies arrive (issue 8), before and after.

    .venv/bin/python -m loadtests.bench.largebodies [--seconds 6] [--senders 2] [--before COMMIT] [--quick]

One `meshserve serve --model digits:1` (the demo repository). wrk posts the small binary digits
request (tritonclient's encoding) at concurrency 8: first alone, then while `--senders` clients
post 10 MB JSON bodies back to back. Each large body is a digits tensor whose `data` holds 2.5
million numbers for a [1, 1, 8, 8] shape: the server parses and converts all of it before the
count check refuses it (400), so every large request costs a full decode, which is what is priced.
With `--before COMMIT` the same points are measured first on that commit's services/ (exported
with `git archive` into a temporary folder), so one run gives before and after on the same machine
state. Figures go to loadtests/bench/results/largebodies.{md,json} (--quick: runs/bench/).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import numpy as np

from loadtests.bench.machine import load_average, machine_facts
from loadtests.bench.process import free_port, serving
from loadtests.bench.report import markdown_table, write_results
from loadtests.bench.v2 import write_bodies
from loadtests.bench.wrk import run_wrk

REPO = Path(__file__).resolve().parents[2]
LARGE_NUMBERS = 2_500_000  # "0.5," each: 10 MB of JSON
CONNECTIONS = 8


def large_body() -> bytes:
    data = b"[" + b"0.5," * (LARGE_NUMBERS - 1) + b"0.5]"
    return b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,8,8],"data":' + data + b"}]}"


def export(commit: str, into: Path) -> Path:
    """services/ of `commit` as plain files (no worktree, no change to the repository's git state)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "services"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def measure(root: Path, label: str, seconds: float, senders: int, work: Path) -> list[dict]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "services.cli", "serve", "--repository", str(REPO / "models"), "--model", "digits:1",
           "--port", str(port), "--poll-interval", "0"]  # fmt: skip
    bodies = write_bodies("input", np.zeros((1, 1, 8, 8), np.float32), "logits", work / "bodies")
    small = bodies["binary"]
    big = large_body()
    rows = []
    with serving(cmd, f"{base}/v2/health/ready", work / f"{label}.log", env={"PYTHONPATH": str(root)}, cwd=root):
        url = f"{base}/v2/models/digits/infer"
        run_wrk(url, small.path, small.headers, CONNECTIONS, 1.0)  # warm-up
        alone = run_wrk(url, small.path, small.headers, CONNECTIONS, seconds)
        rows.append({"code": label, "phase": "small alone", **_point(alone), "large answered": 0, "large status": ""})
        stop = threading.Event()
        statuses: list[int] = []

        def send() -> None:
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    statuses.append(client.post(url, content=big).status_code)

        threads = [threading.Thread(target=send, daemon=True) for _ in range(senders)]
        for thread in threads:
            thread.start()
        try:
            loaded = run_wrk(url, small.path, small.headers, CONNECTIONS, seconds)
        finally:
            stop.set()
            for thread in threads:
                thread.join(180)
        kinds = ", ".join(f"{s} x{statuses.count(s)}" for s in sorted(set(statuses)))
        rows.append({"code": label, "phase": f"small while {senders} send 10 MB JSON", **_point(loaded),
                     "large answered": len(statuses), "large status": kinds})  # fmt: skip
    return rows


def _point(point: dict) -> dict:
    return {
        "req/s": round(point["rps"]),
        "p50 ms": point["p50_ms"],
        "p99 ms": point["p99_ms"],
        "failed": point["failed"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--before", metavar="COMMIT", help="also measure this commit's services/ first")
    parser.add_argument("--quick", action="store_true", help="3 s points, results under runs/bench/")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    out = REPO / ("runs/bench" if args.quick else "loadtests/bench/results")
    load_start = load_average()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        work = Path(tmp)
        if args.before:
            (work / "before").mkdir()
            old = export(args.before, work / "before")
            rows += measure(old, f"before ({args.before})", seconds, args.senders, work)
        rows += measure(REPO, "after (this commit)", seconds, args.senders, work)
    columns = [
        (k, k) for k in ("code", "phase", "req/s", "p50 ms", "p99 ms", "failed", "large answered", "large status")
    ]
    facts = machine_facts(REPO, {"load_average_at_start": load_start, "seconds_per_point": seconds,
                                 "connections": CONNECTIONS, "large_body_bytes": len(large_body())})  # fmt: skip
    markdown = (
        "# Small requests while 10 MB JSON bodies arrive (issue 8)\n\n"
        f"`python -m loadtests.bench.largebodies {' '.join(sys.argv[1:])}`: digits binary requests at concurrency "
        f"{CONNECTIONS} (wrk), alone and while {args.senders} clients post 10 MB JSON bodies back to back.\n\n"
        + markdown_table(rows, columns)
        + f"\n\nMachine: {facts['cpu_model']}, {facts['cores']} cores, load average at start {load_start}, at end "
        f"{facts['load_average_1_5_15']} (a shared machine: other engineers' tests ran meanwhile; compare rows of "
        "one run only). Server unpinned; wrk and the senders on the same two cores.\n"
    )
    _, md_path = write_results(out, "largebodies", {"machine": facts, "rows": rows}, markdown)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
