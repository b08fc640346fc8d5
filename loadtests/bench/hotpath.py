"""What the model server's REST infer path costs per request, counted rather than timed:
`python -m loadtests.bench.hotpath [--base-commit REV | --base DIR] [--requests N]`.

On a shared 2-core machine req/s swings by 25 % between runs of the same code (results/merged-ab.md:
two modes, ~7.1-7.6k and ~9.0-9.6k), so a 5 % regression hides in the noise. This counts instead:
Python bytecodes executed on the event-loop thread per request (sys.settrace with opcode events, a
deterministic figure) for the in-process infer path (hotpath_driver.py: the tree's ASGI app, digits,
32 concurrent binary requests), for the HTTP protocol (uvicorn's httptools protocol alone against
the tree's guarded one) and for the gateway (its handle and real upstream client in front of one
model server of this checkout), with the app's event-loop CPU per request in process beside it
(min of 5 runs).
With a base it measures both trees the same way and reports the ratios. Also times one update of
prometheus_client's Histogram/Counter against services.common.leanmetrics' (timeit, min of 5).

Writes results/hotpath.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import timeit
from io import BytesIO
from pathlib import Path

import numpy as np

from loadtests.bench.machine import machine_facts
from loadtests.bench.process import free_port, serving
from loadtests.bench.v2 import write_bodies

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
DRIVER = Path(__file__).resolve().parent / "hotpath_driver.py"


def _run(tree: Path, n: int, mode: str, body: Path, header_length: str, *extra: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tree), str(n), mode, str(body), header_length, *extra],
        capture_output=True, text=True, check=False, cwd=tree,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"requests"')]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{mode} on {tree} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def measure_tree(tree: Path, n: int, body: Path, header_length: str, upstream_port: int) -> dict:
    ops = _run(tree, n, "ops", body, header_length)
    gateway = _run(tree, n, "gateway", body, header_length, str(upstream_port))
    cpu = min(_run(tree, n * 2, "cpu", body, header_length)["cpu_us_per_request"] for _ in range(5))
    plain = _run(tree, n, "protocol-plain", body, header_length)
    guarded = _run(tree, n, "protocol-guarded", body, header_length)
    return {
        "app_ops_per_request": round(ops["ops_per_request"], 1),
        "app_cpu_us_per_request_min": round(cpu, 1),
        "app_top_functions": {k: round(v, 1) for k, v in list(ops["by_function"].items())[:25]},
        "protocol_ops_uvicorn": round(plain["ops_per_request"], 1),
        "protocol_ops_guarded": round(guarded["ops_per_request"], 1),
        "gateway_ops_per_request": round(gateway["ops_per_request"], 1),
        "gateway_top_functions": {k: round(v, 1) for k, v in list(gateway["by_function"].items())[:25]},
    }


def metric_updates() -> dict[str, float]:
    """ns per update, min of 5 timeit runs: prometheus_client against leanmetrics."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PCounter
    from prometheus_client import Histogram as PHistogram

    from services.common import leanmetrics
    from services.common.telemetry import LATENCY_BUCKETS

    registry = CollectorRegistry()
    theirs = PHistogram("b_seconds", "b", ["m"], buckets=LATENCY_BUCKETS, registry=registry)
    ours = leanmetrics.Histogram("c_seconds", "c", ["m"], LATENCY_BUCKETS, registry=None)
    children = {
        "prometheus_client Histogram.observe": theirs.labels("m").observe,
        "leanmetrics Histogram.observe": ours.labels("m").observe,
        "prometheus_client Counter.inc": PCounter("b_total", "b", ["m"], registry=registry).labels("m").inc,
        "leanmetrics Counter.inc": leanmetrics.Counter("c_total", "c", ["m"], registry=None).labels("m").inc,
    }
    number = 200_000
    out = {}
    for name, update in children.items():
        arg = (0.0031,) if "observe" in name else ()
        best = min(timeit.repeat(lambda u=update, a=arg: u(*a), number=number, repeat=5))
        out[name] = round(best / number * 1e9, 1)
    return out


def _archive(rev: str, into: Path) -> Path:
    done = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"--base-commit {rev!r}: git archive failed: {done.stderr.decode(errors='replace').strip()}")
    data = done.stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def report(result: dict) -> str:
    based = "base" in result
    lines = [
        "# The model server's REST infer path, counted per request (`python -m loadtests.bench.hotpath`)",
        "",
        f"{result['machine']['date_utc']} on {result['machine']['cpu_model']}; commit {result['machine']['commit']}"
        + (f", base {result['base_label']}" if "base" in result else "")
        + f"; {result['requests']} requests per count, digits, 32 concurrent, binary.",
        "",
        "Bytecodes are executed Python instructions on the event-loop thread (deterministic); CPU is that",
        "thread's time in process, min of 5 runs (noisy on a shared machine). The protocol rows are the HTTP",
        "layer alone, under a trivial app.",
        "",
        "| measure | " + ("base | " if based else "") + "this tree |" + (" ratio |" if based else ""),
        "| --- | " + ("--- | " if based else "") + "--- |" + (" --- |" if based else ""),
    ]
    keys = [
        ("app: bytecodes per request", "app_ops_per_request"),
        ("app: loop CPU us per request (min of 5)", "app_cpu_us_per_request_min"),
        ("protocol: uvicorn's httptools with uvicorn's defaults, bytecodes", "protocol_ops_uvicorn"),
        ("protocol: as the model server serves (httpserver.py's config), bytecodes", "protocol_ops_guarded"),
        ("gateway: handle + upstream client per proxied request, bytecodes", "gateway_ops_per_request"),
    ]
    for label, key in keys:
        ours = result["tree"][key]
        if "base" in result:
            base = result["base"][key]
            lines.append(f"| {label} | {base:,} | {ours:,} | {ours / base:.3f} |")
        else:
            lines.append(f"| {label} | {ours:,} |")
    total_ours = result["tree"]["app_ops_per_request"] + result["tree"]["protocol_ops_guarded"]
    if "base" in result:
        total_base = result["base"]["app_ops_per_request"] + result["base"]["protocol_ops_guarded"]
        ratio = total_ours / total_base
        lines.append(f"| app + protocol as served, bytecodes | {total_base:,.1f} | {total_ours:,.1f} | {ratio:.3f} |")
        gw_ours = result["tree"]["gateway_ops_per_request"] + result["tree"]["protocol_ops_guarded"]
        gw_base = result["base"]["gateway_ops_per_request"] + result["base"]["protocol_ops_guarded"]
        ratio = gw_ours / gw_base
        lines.append(f"| gateway + protocol as served, bytecodes | {gw_base:,.1f} | {gw_ours:,.1f} | {ratio:.3f} |")
    lines += ["", "One metric update (ns, min of 5 timeit runs of 200,000):", "", "| update | ns |", "| --- | --- |"]
    lines += [f"| {name} | {ns} |" for name, ns in result["metric_updates"].items()]
    lines += [
        "",
        "Top functions of the app path in this tree (bytecodes per request):",
        "",
        "| function | bytecodes |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {ops} |" for name, ops in result["tree"]["app_top_functions"].items()]
    lines += ["", "Top functions of the gateway in this tree (bytecodes per proxied request):", ""]
    lines += ["| function | bytecodes |", "| --- | --- |"]
    lines += [f"| `{name}` | {ops} |" for name, ops in result["tree"].get("gateway_top_functions", {}).items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--base-commit", help="a git revision of this repository to compare against (git archive)")
    group.add_argument("--base", type=Path, help="a source tree to compare against")
    parser.add_argument("--requests", type=int, default=3200, help="requests per count (default 3200)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for hotpath.{json,md}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshserve-hotpath-") as tmp:
        bodies = write_bodies("input", np.zeros((1, 1, 8, 8), np.float32), "logits", Path(tmp) / "bodies")
        binary = bodies["binary"]
        header_length = str(binary.headers["Inference-Header-Content-Length"])
        result: dict = {"machine": machine_facts(REPO), "requests": args.requests}
        base = args.base
        if args.base_commit:
            base = _archive(args.base_commit, Path(tmp) / "base")
            result["base_label"] = args.base_commit
        elif base is not None:
            if not (base / "services" / "modelserver").is_dir():
                raise SystemExit(f"--base {base}: not a meshserve source tree (no services/modelserver/)")
            result["base_label"] = str(base)
        port = free_port()
        serve = [sys.executable, "-m", "services.cli", "serve", "--repository", str(REPO / "models")]
        serve += ["--model", "digits:1", "--port", str(port), "--poll-interval", "0"]
        ready = f"http://127.0.0.1:{port}/v2/health/ready"
        with serving(serve, ready, Path(tmp) / "modelserver.log", cwd=REPO):  # the gateways' upstream
            if base is not None:
                result["base"] = measure_tree(base.resolve(), args.requests, binary.path, header_length, port)
            result["tree"] = measure_tree(REPO, args.requests, binary.path, header_length, port)
        result["metric_updates"] = metric_updates()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hotpath.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "hotpath.md").write_text(report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
