"""Gateway benchmark: the same model server called directly and through the gateway, one run.

    .venv/bin/python -m loadtests.bench.gateway [--seconds 8] [--quick]

One `meshserve serve --model digits:1` pinned to core 0; the gateway (`python -m
services.gateway`) pinned to core 1 beside wrk, so both paths use the same two cores. At
concurrency 1 and 32, wrk posts the same v2 binary infer body (tritonclient's encoding) directly
and through the gateway (API key, rate limit, weighted route, metrics: the full request path).
Targets (issue 3): at most 1 ms added to p50 at c1; at least 0.8x the direct throughput at c32.
Figures, CPU seconds per request of each process and the verdicts go to
loadtests/bench/results/gateway.{md,json} (--quick: runs/bench/, not committed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from loadtests.bench.machine import machine_facts
from loadtests.bench.process import cpu_seconds, free_port, serving, wait_for_quiet
from loadtests.bench.report import markdown_table, ratio, verdict, write_results
from loadtests.bench.v2 import check_answer, write_bodies
from loadtests.bench.wrk import run_wrk

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
SERVER_CORE, GATEWAY_CORE, LOAD_CORE = 0, 1, 1
CONCURRENCY = (1, 32)
MAX_ADDED_P50_MS = 1.0
MIN_THROUGHPUT_RATIO = 0.8
KEY_ENV, KEY = "MESHSERVE_BENCH_KEY", "bench-key-not-a-secret"
QUIET_BUSY, QUIET_WINDOW_S = 0.15, 1.0


def bench_spec(path: Path) -> None:
    """digits v1 only, one consumer with a limit wrk never reaches, and no outlier ejection.

    The benchmark prices the proxy, not resilience: on this shared machine a neighbour can stall
    the one model server for longer than a per-try timeout, and Envoy semantics (Istio's default
    minHealthPercent 0) then eject the only host and answer 503 for base_ejection_time.
    """
    spec = {
        "name": "bench",
        "repository": str(MODELS),
        "models": {
            "digits": {
                "versions": {1: {"replicas": 1}},
                "traffic": {"weights": {1: 100}},
                "resilience": {
                    "timeout": "10s",
                    "retries": {"attempts": 2, "per_try_timeout": "5s"},
                    "outlier_detection": {"consecutive_5xx_errors": 0},
                    "connection_pool": {"max_connections": 64, "max_pending_requests": 128},
                },
            }
        },
        "gateway": {"consumers": [{"username": "bench", "api_key": {"env": KEY_ENV}, "rate_limit": {"second": 10**9}}]},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def endpoints(path: Path, port: int) -> None:
    from services.discovery import Endpoint
    from services.discovery.static import write_table

    write_table(path, {"digits-v1": [Endpoint("digits-v1", "digits-v1-0", "127.0.0.1", port)]})


def measure(url: str, body, headers: dict, connections: int, seconds: float, pids: dict[str, int]) -> dict:
    busy = wait_for_quiet([SERVER_CORE, GATEWAY_CORE], QUIET_BUSY, QUIET_WINDOW_S, deadline_s=20)
    run_wrk(url, body.path, {**body.headers, **headers}, connections, 1.0, LOAD_CORE)  # warm-up
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    point = run_wrk(url, body.path, {**body.headers, **headers}, connections, seconds, LOAD_CORE)
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    for name, cpu in spent.items():
        point[f"{name}_cpu_us_per_req"] = round(1e6 * cpu / point["requests"], 1) if point["requests"] else None
    point["busy_before"] = busy
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per load point")
    parser.add_argument("--quick", action="store_true", help="short points, results under runs/bench/")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    out = REPO / ("runs/bench" if args.quick else "loadtests/bench/results")

    pixels = (np.random.default_rng(0).integers(0, 17, size=(1, 1, 8, 8)) / 16).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        tmpdir = Path(tmp)
        bodies = write_bodies("input", pixels, "logits", tmpdir / "bodies")
        body = bodies["binary"]
        server_port, gateway_port, status_port = free_port(), free_port(), free_port()
        server_cmd = [sys.executable, "-m", "services.cli", "serve", "--repository", str(MODELS),
                      "--model", "digits:1", "--port", str(server_port), "--poll-interval", "0"]  # fmt: skip
        spec_path, endpoints_path = tmpdir / "mesh.yaml", tmpdir / "endpoints.json"
        bench_spec(spec_path)
        endpoints(endpoints_path, server_port)
        gateway_cmd = [sys.executable, "-m", "services.gateway", "--spec", str(spec_path), "--port", str(gateway_port),
                       "--status-port", str(status_port)]  # fmt: skip
        env = {"PYTHONPATH": str(REPO), KEY_ENV: KEY, "MESHSERVE_DISCOVERY": f"static:{endpoints_path}"}
        direct = f"http://127.0.0.1:{server_port}/v2/models/digits/infer"
        through = f"http://127.0.0.1:{gateway_port}/v2/models/digits/infer"
        with (
            serving(
                server_cmd, direct.replace("/infer", "/ready"), tmpdir / "server.log", SERVER_CORE, env, REPO
            ) as ms,
            serving(
                gateway_cmd, f"http://127.0.0.1:{status_port}/ready", tmpdir / "gw.log", GATEWAY_CORE, env, REPO
            ) as gw,
        ):
            import onnxruntime as ort

            expected = ort.InferenceSession(str(MODELS / "digits" / "1" / "model.onnx")).run(None, {"input": pixels})[0]
            check_answer(direct.split("/v2")[0], "digits", "input", pixels, "logits", expected)
            os.environ[KEY_ENV] = KEY
            _check_through_gateway(through.split("/v2")[0], pixels, expected)
            points = []
            for connections in CONCURRENCY:
                for path, url, headers in (("direct", direct, {}), ("gateway", through, {"apikey": KEY})):
                    pids = {"server": ms.pid, **({"gateway": gw.pid} if path == "gateway" else {})}
                    point = measure(url, body, headers, connections, seconds, pids)
                    points.append({"path": path, **point})
                    print(f"{path:8} c{connections:<3} {point['rps']:>9,.0f} req/s  p50 {point['p50_ms']:.3f} ms"
                          f"  p99 {point['p99_ms']:.3f} ms  failed {point['failed']}", flush=True)  # fmt: skip

    by = {(p["path"], p["concurrency"]): p for p in points}
    added_p50 = round(by["gateway", 1]["p50_ms"] - by["direct", 1]["p50_ms"], 3)
    throughput = ratio(by["gateway", 32]["rps"], by["direct", 32]["rps"])
    failed = sum(p["failed"] for p in points)
    cores = {"server_core": SERVER_CORE, "gateway_core": GATEWAY_CORE, "wrk_core": LOAD_CORE}
    results = {
        "machine": machine_facts(REPO, cores),
        "body": {"encoding": body.encoding, "bytes": body.size},
        "points": points,
        "added_p50_ms_c1": added_p50,
        "throughput_ratio_c32": throughput,
        "targets": {
            "no_failed_requests": {"failed": failed, "verdict": verdict(failed == 0)},
            "added_p50_ms_c1": {"max": MAX_ADDED_P50_MS, "verdict": verdict(added_p50 <= MAX_ADDED_P50_MS)},
            "throughput_ratio_c32": {
                "min": MIN_THROUGHPUT_RATIO,
                "verdict": verdict(throughput >= MIN_THROUGHPUT_RATIO),
            },
        },
    }
    columns = [("path", "path"), ("concurrency", "c"), ("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
               ("failed", "failed"), ("server_cpu_us_per_req", "server CPU us/req"),
               ("gateway_cpu_us_per_req", "gateway CPU us/req"), ("busy_before", "core busy before")]  # fmt: skip
    markdown = "\n".join(
        [
            "# Gateway benchmark: direct vs through the gateway",
            "",
            f"Generated by `python -m loadtests.bench.gateway` at {results['machine']['date_utc']} UTC on "
            f"{results['machine']['cpu_model']} ({results['machine']['cores']} cores, load "
            f"{results['machine']['load_average_1_5_15']}), commit {results['machine']['commit']}.",
            f"Model server on core {SERVER_CORE}; gateway and wrk on core {GATEWAY_CORE}; "
            f"body: v2 binary, {body.size} bytes; {seconds:g} s per point.",
            "",
            markdown_table(points, columns),
            "",
            f"- added p50 at c1: **{added_p50} ms** (target <= {MAX_ADDED_P50_MS} ms): "
            f"{results['targets']['added_p50_ms_c1']['verdict']}",
            f"- throughput through the gateway / direct at c32: **{throughput}** (target >= {MIN_THROUGHPUT_RATIO}): "
            f"{results['targets']['throughput_ratio_c32']['verdict']}",
            f"- failed requests in all points: **{failed}**: {results['targets']['no_failed_requests']['verdict']}",
        ]
    )
    json_path, md_path = write_results(out, "gateway", results, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _check_through_gateway(base: str, pixels: np.ndarray, expected: np.ndarray) -> None:
    """The gateway must pass the model's answer through unchanged before it is timed."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(base.removeprefix("http://"))
    try:
        tensor = triton.InferInput("input", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=True)
        got = client.infer("digits", [tensor], headers={"apikey": KEY}).as_numpy("logits")
        if got is None or not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
            raise AssertionError("the gateway's answer differs from onnxruntime's")
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
