"""gRPC beside REST in one run: our server over REST (wrk, binary body) and over gRPC (h2load, raw
contents), and KServe's gRPC server on the same ONNX file, plus resnet's in-process limit.

    .venv/bin/python -m loadtests.bench.protocols [--quick]

Pinning and quiet-core handling as in loadtests/bench/modelserver.py (server on core 0, the load
generator on core 1). Points: digits at concurrency 1/8/32, resnet at 32. Every server's gRPC
answer is checked against onnxruntime with a real gRPC client before it is loaded. Needs `h2load`
(Debian: nghttp2-client). Figures go to loadtests/bench/results/protocols.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from loadtests.bench.h2load import frame, run_h2load
from loadtests.bench.machine import load_average, machine_facts
from loadtests.bench.modelserver import (
    KSERVE_LOG_CONFIG,
    LOAD_CORE,
    QUIET_BUSY,
    QUIET_WINDOW_S,
    REPO,
    SERVER_CORE,
    ModelUnderTest,
    in_process_limit,
    merge_limits,
    model_under_test,
    ours_command,
)
from loadtests.bench.ortlimit import sample
from loadtests.bench.process import free_port, serving, wait_for_quiet
from loadtests.bench.report import markdown_table, ratio, verdict, write_results
from loadtests.bench.v2 import write_bodies
from loadtests.bench.wrk import run_wrk

POINTS = {"digits": (1, 8, 32), "resnet": (32,)}
PEER = Path(__file__).with_name("peers") / "kserve_onnx.py"
# Targets (issue 11)
DIGITS_GRPC_OVER_REST = 1.0
DIGITS_GRPC_OVER_KSERVE = 3.0
RESNET_GRPC_OVER_LIMIT = 0.9


def infer_message(model: ModelUnderTest, array: np.ndarray) -> bytes:
    """A ModelInferRequest (raw contents, batch 1), serialized with our stubs."""
    from services.common.proto import load

    pb2, _ = load()
    request = pb2.ModelInferRequest(model_name=model.name)
    request.inputs.add(name=model.input_name, datatype="FP32", shape=array.shape)
    request.raw_input_contents.append(np.ascontiguousarray(array, np.float32).tobytes())
    return request.SerializeToString()


def check_grpc(port: int, model: ModelUnderTest, array: np.ndarray, expected: np.ndarray) -> None:
    from services.common.proto import load

    pb2, pb2_grpc = load()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(pb2.ModelInferRequest.FromString(infer_message(model, array)), timeout=30)
    index = [o.name for o in response.outputs].index(model.output_name)
    out = response.outputs[index]
    if response.raw_output_contents:
        got = np.frombuffer(response.raw_output_contents[index], np.float32)
    else:
        got = np.array(out.contents.fp32_contents, np.float32)
    if not np.allclose(got.reshape(expected.shape), expected, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"gRPC :{port} {model.name} answered differently from onnxruntime")


def kserve_grpc_command(model: ModelUnderTest, http_port: int, grpc_port: int, log_config: Path) -> list[str]:
    """KServe's ModelServer with its gRPC server on (same peer as the REST benchmark)."""
    return [
        sys.executable, str(PEER), "--model_name", model.name, "--onnx", str(model.onnx),
        "--intra_op", str(model.intra_op), "--inter_op", str(model.inter_op), "--http_port", str(http_port),
        "--grpc_port", str(grpc_port), "--enable_grpc", "true", "--enable_latency_logging", "false",
        "--log_config_file", str(log_config),
    ]  # fmt: skip


def measure(kind: str, target: str, connections: int, timing: dict) -> dict:
    wait_for_quiet((SERVER_CORE, LOAD_CORE), QUIET_BUSY, QUIET_WINDOW_S, timing["quiet"])
    if kind == "rest":
        path, headers = target
        return run_wrk(*path, headers, connections, timing["seconds"], LOAD_CORE)
    url, body = target
    return run_h2load(url, body, connections, timing["seconds"], timing["warmup"], LOAD_CORE)


def bench_model(repository: Path, model: ModelUnderTest, work: Path, timing: dict, log_config: Path) -> list[dict]:
    probe = sample((1, *model.item_shape), seed=1)
    session = ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"])
    expected = session.run([model.output_name], {model.input_name: probe})[0]
    bodies = write_bodies(model.input_name, sample((1, *model.item_shape)), model.output_name, work / model.name)
    grpc_body = work / model.name / "infer.grpc"
    grpc_body.write_bytes(frame(infer_message(model, sample((1, *model.item_shape)))))
    live_body = work / model.name / "live.grpc"
    live_body.write_bytes(frame(b""))  # an empty ServerLiveRequest
    rows: list[dict] = []

    def record(server: str, protocol: str, point: dict) -> None:
        rows.append({"server": server, "protocol": protocol, "model": model.name, **point})
        print(
            f"  {server:7} {protocol:5} {model.name:7} c={point['concurrency']:<3} {point['rps']:>9.1f} req/s "
            f"p50 {point['p50_ms']:.2f} ms p99 {point['p99_ms']:.2f} ms failed {point['failed']}",
            flush=True,
        )

    port, grpc_port = free_port(), free_port()
    cmd = [*ours_command(repository, model, port), "--grpc-port", str(grpc_port)]
    ready = f"http://127.0.0.1:{port}/v2/health/ready"
    grpc_url = f"http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"
    rest_url = f"http://127.0.0.1:{port}/v2/models/{model.name}/infer"
    binary = bodies["binary"]
    with serving(
        cmd, ready, work / f"ours-{model.name}.log", core=SERVER_CORE, cwd=REPO, env={"PYTHONPATH": str(REPO)}
    ):
        check_grpc(grpc_port, model, probe, expected)
        for connections in POINTS[model.name]:
            run_wrk(rest_url, binary.path, binary.headers, connections, timing["warmup"], LOAD_CORE)
            record("ours", "rest", measure("rest", ((rest_url, binary.path), binary.headers), connections, timing))
            record("ours", "grpc", measure("grpc", (grpc_url, grpc_body), connections, timing))
        if model.name == "digits":  # grpcio's own floor: an RPC that does nothing (ServerLive), same load
            live_url = grpc_url.replace("/ModelInfer", "/ServerLive")
            record("ours", "grpc-live", measure("grpc", (live_url, live_body), POINTS[model.name][-1], timing))
    port, grpc_port = free_port(), free_port()
    cmd = kserve_grpc_command(model, port, grpc_port, log_config)
    grpc_url = f"http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"
    with serving(cmd, f"http://127.0.0.1:{port}/v2/health/ready", work / f"kserve-{model.name}.log", core=SERVER_CORE):
        check_grpc(grpc_port, model, probe, expected)
        for connections in POINTS[model.name]:
            record("kserve", "grpc", measure("grpc", (grpc_url, grpc_body), connections, timing))
    return rows


def find(rows: list[dict], server: str, protocol: str, model: str, concurrency: int) -> dict | None:
    for row in rows:
        if (row["server"], row["protocol"], row["model"], row["concurrency"]) == (server, protocol, model, concurrency):
            return row
    return None


def evaluate(rows: list[dict], limits: dict) -> list[dict]:
    out = []
    grpc_digits, rest_digits = find(rows, "ours", "grpc", "digits", 32), find(rows, "ours", "rest", "digits", 32)
    kserve_digits = find(rows, "kserve", "grpc", "digits", 32)
    if grpc_digits and rest_digits:
        value = ratio(grpc_digits["rps"], rest_digits["rps"])
        out.append(
            {
                "target": "digits c32: ours gRPC / ours REST binary",
                "measured": f"{grpc_digits['rps']:.0f} / {rest_digits['rps']:.0f} = {value:.2f}",
                "threshold": f">= {DIGITS_GRPC_OVER_REST}",
                "verdict": verdict(value >= DIGITS_GRPC_OVER_REST),
            }
        )
    if grpc_digits and kserve_digits:
        value = ratio(grpc_digits["rps"], kserve_digits["rps"])
        out.append(
            {
                "target": "digits c32: ours gRPC / KServe gRPC",
                "measured": f"{grpc_digits['rps']:.0f} / {kserve_digits['rps']:.0f} = {value:.2f}x",
                "threshold": f">= {DIGITS_GRPC_OVER_KSERVE}x",
                "verdict": verdict(value >= DIGITS_GRPC_OVER_KSERVE),
            }
        )
    live = find(rows, "ours", "grpc-live", "digits", 32)
    if grpc_digits and live:
        value = ratio(grpc_digits["rps"], live["rps"])
        out.append(
            {
                "target": "digits c32: ours gRPC ModelInfer / ServerLive (an RPC doing nothing) on the same server",
                "measured": f"{grpc_digits['rps']:.0f} / {live['rps']:.0f} = {value:.2f}",
                "threshold": "(informative: grpcio's per-call floor)",
                "verdict": "-",
            }
        )
    grpc_resnet = find(rows, "ours", "grpc", "resnet", 32)
    if grpc_resnet and "resnet" in limits:
        limit = limits["resnet"]["best"]["inferences_per_s"]
        value = ratio(grpc_resnet["rps"], limit)
        out.append(
            {
                "target": "resnet c32: ours gRPC / in-process limit",
                "measured": f"{grpc_resnet['rps']:.1f} / {limit:.1f} = {value:.3f}",
                "threshold": f">= {RESNET_GRPC_OVER_LIMIT}",
                "verdict": verdict(value >= RESNET_GRPC_OVER_LIMIT),
            }
        )
    return out


TARGET_COLUMNS = [("target", "target"), ("measured", "measured"), ("threshold", "threshold"), ("verdict", "verdict")]
COLUMNS = [
    ("server", "server"),
    ("protocol", "protocol"),
    ("model", "model"),
    ("concurrency", "conc."),
    ("rps", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("failed", "failed"),
]


def render(facts: dict, rows: list[dict], targets: list[dict], limits: dict) -> str:
    lines = [
        "# gRPC beside REST",
        "",
        f"Run {facts['date_utc']} UTC on {facts['cpu_model']}, {facts['cores']} cores, onnxruntime "
        f"{facts['onnxruntime']}, kserve {facts['kserve']}, commit {facts['commit']}. Load average at start "
        f"{facts['load_average_1_5_15']}, at end {facts['load_average_end']}.",
        "",
        f"Servers pinned to core {SERVER_CORE}; the load generator (wrk for REST with a binary body, h2load for "
        f"gRPC with raw contents, both one thread, closed loop) on core {LOAD_CORE}; {facts['seconds']:g} s per "
        f"point. One batch-1 request per call. **The machine was shared with other engineers' test runs while "
        "this ran: absolute figures move with their load; compare within the run.**",
        "",
        "## Targets",
        "",
        markdown_table(targets, TARGET_COLUMNS),
        "",
        "## Points",
        "",
        markdown_table(rows, COLUMNS),
        "",
    ]
    if "resnet" in limits:
        best = limits["resnet"]["best"]
        lines += [f"resnet in-process limit: {best['inferences_per_s']:.1f} inferences/s at batch {best['batch']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s points; results to runs/bench/")
    parser.add_argument("--models", default="digits,resnet")
    parser.add_argument("--repository", type=Path, default=REPO / "models")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    timing = (
        {"seconds": 3.0, "warmup": 1.0, "batch_seconds": 1.0, "quiet": 5.0}
        if args.quick
        else {"seconds": 10.0, "warmup": 2.0, "batch_seconds": 2.0, "quiet": 30.0}
    )
    results_dir = args.results or (REPO / "runs" / "bench" if args.quick else Path(__file__).with_name("results"))
    repository = args.repository.resolve()
    from importlib.metadata import version

    facts = machine_facts(REPO, {"kserve": version("kserve"), **timing})
    rows: list[dict] = []
    limits: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        log_config = work / "kserve-logging.json"
        log_config.write_text(json.dumps(KSERVE_LOG_CONFIG))
        for name in args.models.split(","):
            model = model_under_test(repository, name)
            if name == "resnet":
                before = in_process_limit(model, timing["batch_seconds"])
            rows += bench_model(repository, model, work, timing, log_config)
            if name == "resnet":
                limits[name] = merge_limits(before, in_process_limit(model, timing["batch_seconds"]))
    facts["load_average_end"] = load_average()
    targets = evaluate(rows, limits)
    markdown = render(facts, rows, targets, limits)
    json_path, md_path = write_results(
        results_dir, "protocols", {"machine": facts, "served": rows, "targets": targets, "in_process": limits}, markdown
    )
    print(markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
