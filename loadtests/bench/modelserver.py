"""Model server benchmark: in-process limit vs our server vs KServe, one run, one machine.

    .venv/bin/python -m loadtests.bench.modelserver [--quick] [--models resnet,digits]

For each model: (a) onnxruntime in-process at its best batch size (the limit), pinned to the
server core; (b) our server (`meshserve serve`) and (c) KServe's Python ModelServer serving the
same ONNX file, each pinned to core 0 with wrk on core 1, at concurrency 1/8/32 with binary and
JSON bodies. Every server's answer is checked against onnxruntime before it is loaded. Figures go
to loadtests/bench/results/modelserver.{md,json} (--quick: runs/bench/, not committed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import onnxruntime as ort

from loadtests.bench.machine import load_average, machine_facts
from loadtests.bench.ortlimit import sample
from loadtests.bench.process import core_busy_seconds, cpu_seconds, free_port, pinned, serving, wait_for_quiet
from loadtests.bench.report import markdown_table, ratio, verdict, write_results
from loadtests.bench.v2 import ENCODINGS, Body, check_answer, write_bodies
from loadtests.bench.wrk import run_wrk

REPO = Path(__file__).resolve().parents[2]
SERVER_CORE, LOAD_CORE = 0, 1
CONCURRENCY = (1, 8, 32)
KSERVE_VENV = REPO / ".venv-kserve"
KSERVE_PIN = "kserve==0.21.0"
PEER = Path(__file__).with_name("peers") / "kserve_onnx.py"
# Targets (issue 2): served/in-process for the compute-bound model, ours/KServe for the tiny one.
RESNET_OVER_LIMIT = 0.85
DIGITS_OVER_KSERVE = 2.5
# Before each measurement, wait (bounded) until neighbours leave the cores this quiet.
QUIET_BUSY, QUIET_WINDOW_S = 0.15, 1.0
# A point during which neighbours took more than this of the server's core is measured again.
NEIGHBOUR_MAX = 0.05
# KServe at its leanest through its own documented flags: no per-request log lines at all.
KSERVE_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {
        name: {"handlers": ["stderr"], "level": "WARNING", "propagate": False}
        for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access")
    },
}


@dataclass(frozen=True)
class ModelUnderTest:
    name: str
    version: int
    onnx: Path
    input_name: str
    item_shape: tuple[int, ...]
    output_name: str
    max_batch_size: int
    intra_op: int
    inter_op: int


def model_under_test(repository: Path, name: str) -> ModelUnderTest:
    """The newest served version of `name`, its tensor names and its onnxruntime thread settings."""
    from services.modelserver.config import load_config  # the server's own reading of config.yaml

    config = load_config(repository / name)
    on_disk = [int(p.name) for p in (repository / name).iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()]
    served = config.version_policy.select(on_disk)
    if not served:
        raise SystemExit(f"{repository / name}: no version with a model.onnx")
    version = served[-1]
    onnx = repository / name / str(version) / "model.onnx"
    graph = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    graph_input, graph_output = graph.get_inputs()[0], graph.get_outputs()[0]
    if config.input:
        item_shape = tuple(config.input[0].dims)
    else:
        item_shape = tuple(graph_input.shape[1:] if config.max_batch_size > 0 else graph_input.shape)
    if any(not isinstance(d, int) or d < 1 for d in item_shape):
        raise SystemExit(f"{name}: input shape {item_shape} has variable dims; give fixed dims in config.yaml")
    return ModelUnderTest(
        name=name,
        version=version,
        onnx=onnx,
        input_name=graph_input.name,
        item_shape=item_shape,
        output_name=graph_output.name,
        max_batch_size=config.max_batch_size,
        intra_op=config.optimization.intra_op_num_threads,
        inter_op=config.optimization.inter_op_num_threads,
    )


def batch_sizes(max_batch_size: int, cap: int = 64) -> list[int]:
    """Powers of two up to the model's max batch size (1 when it has no batch dimension)."""
    sizes, b = [], 1
    while b <= max(1, min(max_batch_size, cap)):
        sizes.append(b)
        b *= 2
    return sizes


def in_process_limit(model: ModelUnderTest, seconds: float) -> dict:
    """Run loadtests.bench.ortlimit pinned to the server core; its JSON result."""
    cmd = [
        sys.executable,
        "-m",
        "loadtests.bench.ortlimit",
        str(model.onnx),
        "--input-name",
        model.input_name,
        "--item-shape",
        ",".join(map(str, model.item_shape)),
        "--batches",
        ",".join(map(str, batch_sizes(model.max_batch_size))),
        "--seconds",
        str(seconds),
        "--intra-op",
        str(model.intra_op),
        "--inter-op",
        str(model.inter_op),
    ]
    done = subprocess.run(pinned(cmd, SERVER_CORE), capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout)


def merge_limits(before: dict, after: dict) -> dict:
    """The higher of two in-process measurements (before and after the servers ran), both kept.

    On a shared machine a neighbour's burst can depress one measurement; taking the higher one
    makes "served / limit" harder to pass, never easier.
    """
    best_run = max((before, after), key=lambda run: run["best"]["inferences_per_s"])
    every_point = before["points"] + after["points"]
    return {
        **best_run,
        "best_per_cpu": max(every_point, key=lambda p: p["inferences_per_cpu_s"], default=best_run["best"]),
        "json_decode": before["json_decode"],
        "before_servers": before["best"],
        "after_servers": after["best"],
    }


def ensure_kserve() -> Path:
    """KServe lives in its own venv (its pins clash with ours); create it on first use."""
    python = KSERVE_VENV / "bin" / "python"
    probe = [str(python), "-c", "import kserve, onnxruntime"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"setting up {KSERVE_VENV} ({KSERVE_PIN}, onnxruntime=={ort.__version__})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", KSERVE_PIN, f"onnxruntime=={ort.__version__}"]
    subprocess.run(pip, check=True)
    return python


def ours_command(repository: Path, model: ModelUnderTest, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "services.cli",
        "serve",
        "--repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        f"{model.name}:{model.version}",
    ]


def kserve_command(python: Path, model: ModelUnderTest, port: int, log_config: Path) -> list[str]:
    return [
        str(python),
        str(PEER),
        "--model_name",
        model.name,
        "--onnx",
        str(model.onnx),
        "--intra_op",
        str(model.intra_op),
        "--inter_op",
        str(model.inter_op),
        "--http_port",
        str(port),
        "--enable_grpc",
        "false",
        "--enable_latency_logging",
        "false",
        "--log_config_file",
        str(log_config),
    ]


def load_points(
    server: str, cmd: list[str], port: int, model: ModelUnderTest, bodies: dict[str, Body], work: Path, timing: dict
) -> list[dict]:
    """Start one server, check its answer, then measure every (encoding, concurrency) point."""
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v2/models/{model.name}/infer"
    probe = sample((1, *model.item_shape), seed=1)
    session = ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"])
    expected = session.run([model.output_name], {model.input_name: probe})[0]
    rows = []
    log = work / f"{server}-{model.name}.log"
    with serving(
        cmd, f"{base}/v2/health/ready", log, core=SERVER_CORE, env={"PYTHONPATH": str(REPO)}, cwd=REPO
    ) as proc:
        check_answer(base, model.name, model.input_name, probe, model.output_name, expected)
        for encoding in ENCODINGS:
            body = bodies[encoding]
            for connections in CONCURRENCY:
                run_wrk(url, body.path, body.headers, connections, timing["warmup"], LOAD_CORE)
                point = quietest_point(proc.pid, url, body, connections, timing)
                rows.append({"server": server, "model": model.name, "encoding": encoding, **point})
                print(
                    f"  {server:7} {model.name:7} {encoding:6} c={connections:<3} {point['rps']:>9.1f} req/s "
                    f"p50 {point['p50_ms']:.2f} ms p99 {point['p99_ms']:.2f} ms failed {point['failed']} "
                    f"(neighbours {point['others_cpu']:.2f} of the core, attempt {point['attempt']})",
                    flush=True,
                )
    return rows


def measure_point(pid: int, url: str, body: Body, connections: int, timing: dict) -> dict:
    """One wrk point once the cores are quiet, with the server's and its neighbours' CPU share."""
    busy_before = wait_for_quiet((SERVER_CORE, LOAD_CORE), QUIET_BUSY, QUIET_WINDOW_S, timing["quiet"])
    cpu_before, core_before = cpu_seconds(pid), core_busy_seconds(SERVER_CORE)
    point = run_wrk(url, body.path, body.headers, connections, timing["seconds"], LOAD_CORE)
    server_cpu = cpu_seconds(pid) - cpu_before
    others_cpu = core_busy_seconds(SERVER_CORE) - core_before - server_cpu
    point["server_cpu"] = ratio(server_cpu, point["seconds"])
    point["others_cpu"] = max(0.0, ratio(others_cpu, point["seconds"]))
    point["busy_before"] = busy_before
    point["rps_per_cpu"] = round(point["rps"] / point["server_cpu"], 1) if point["server_cpu"] else 0.0
    return point


def quietest_point(pid: int, url: str, body: Body, connections: int, timing: dict) -> dict:
    """Measure again (bounded) while neighbours took more than NEIGHBOUR_MAX of the server's core; keep the
    attempt they disturbed least, so ours and the peer are compared on as quiet a core as this machine gives."""
    best = None
    for attempt in range(1, timing["attempts"] + 1):
        point = {**measure_point(pid, url, body, connections, timing), "attempt": attempt}
        if best is None or point["others_cpu"] < best["others_cpu"]:
            best = point
        if best["others_cpu"] <= NEIGHBOUR_MAX:
            break
    return best


def find(rows: list[dict], server: str, model: str, encoding: str, concurrency: int) -> dict | None:
    for row in rows:
        key = (row["server"], row["model"], row["encoding"], row["concurrency"])
        if key == (server, model, encoding, concurrency):
            return row
    return None


def evaluate(rows: list[dict], limits: dict[str, dict]) -> list[dict]:
    """The targets of issue 2 plus informative ratios, each with its figures and verdict."""
    out = []
    top = CONCURRENCY[-1]
    if "resnet" in limits:
        limit = limits["resnet"]["best"]["inferences_per_s"]
        for encoding in ENCODINGS:
            ours = find(rows, "ours", "resnet", encoding, top)
            if ours:
                value = ratio(ours["rps"], limit)
                is_target = encoding == "binary"
                out.append(
                    {
                        "target": f"resnet {encoding} c{top}: ours / in-process limit",
                        "measured": f"{ours['rps']:.1f} / {limit:.1f} = {value:.3f}",
                        "threshold": f">= {RESNET_OVER_LIMIT}" if is_target else "(informative)",
                        "verdict": verdict(value >= RESNET_OVER_LIMIT) if is_target else "-",
                        "ratio": value,
                    }
                )
        ours = find(rows, "ours", "resnet", "binary", top)
        per_cpu = limits["resnet"].get("best_per_cpu", {}).get("inferences_per_cpu_s", 0.0)
        if ours and per_cpu:
            value = ratio(ours["rps_per_cpu"], per_cpu)
            out.append(
                {
                    "target": f"resnet binary c{top}: ours / in-process, both per CPU-second (neighbour-proof)",
                    "measured": f"{ours['rps_per_cpu']:.1f} / {per_cpu:.1f} = {value:.3f}",
                    "threshold": "(informative)",
                    "verdict": "-",
                    "ratio": value,
                }
            )
        decode = limits["resnet"]["json_decode"]
        for label in ("tritonclient", "compact"):
            cost = decode[label]
            out.append(
                {
                    "target": f"resnet JSON decode ({label} body, {cost['body_bytes'] / 1e6:.1f} MB) / one inference",
                    "measured": (
                        f"{cost['decode_ms']:.2f} ms / {decode['inference_ms']:.2f} ms = {cost['over_inference']:.3f}"
                    ),
                    "threshold": "(informative)",
                    "verdict": "-",
                    "ratio": cost["over_inference"],
                }
            )
    for encoding in ENCODINGS:
        ours, peer = find(rows, "ours", "digits", encoding, top), find(rows, "kserve", "digits", encoding, top)
        if ours and peer:
            value = ratio(ours["rps"], peer["rps"])
            p99_ok = ours["p99_ms"] <= peer["p99_ms"]
            out.append(
                {
                    "target": f"digits {encoding} c{top}: ours / KServe, p99 no worse",
                    "measured": (
                        f"{ours['rps']:.0f} / {peer['rps']:.0f} = {value:.2f}x; "
                        f"p99 {ours['p99_ms']:.2f} vs {peer['p99_ms']:.2f} ms"
                    ),
                    "threshold": f">= {DIGITS_OVER_KSERVE}x and p99 <=",
                    "verdict": verdict(value >= DIGITS_OVER_KSERVE and p99_ok),
                    "ratio": value,
                }
            )
    return out


COLUMNS = [
    ("server", "server"),
    ("model", "model"),
    ("encoding", "body"),
    ("concurrency", "conc."),
    ("rps", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("failed", "failed"),
    ("server_cpu", "server CPU"),
    ("others_cpu", "others on core"),
    ("rps_per_cpu", "req per CPU-s"),
]


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def render(facts: dict, models: list[ModelUnderTest], limits: dict, rows: list[dict], targets: list[dict]) -> str:
    lines = [
        "# Model server benchmark",
        "",
        f"Run {facts['date_utc']} UTC on {facts['cpu_model']}, {facts['cores']} cores, "
        f"onnxruntime {facts['onnxruntime']}, kserve {facts['kserve']}, Python {facts['python']}, "
        f"commit {facts['commit']} (server/model files changed since: "
        f"{facts['uncommitted_server_or_models'] or 'none'}). "
        f"Load average (1/5/15 min) at start {facts['load_average_1_5_15']}, "
        f"at end {facts['load_average_end']}.",
        "",
        f"Servers and the in-process limit pinned to core {SERVER_CORE}, wrk (1 thread) to core {LOAD_CORE}; "
        f"{facts['seconds']:g} s per point after {facts['warmup']:g} s of warm-up; one batch-1 request per call "
        "(the server may batch concurrent calls). The machine is shared with other engineers' test runs: "
        f"each point waits (up to {facts['quiet']:g} s) for quiet cores and is measured up to {facts['attempts']} "
        f"times while neighbours take more than {NEIGHBOUR_MAX:.0%} of the server core, keeping the quietest attempt; "
        "absolute figures move with their load; the ratios below are measured within this one run.",
        "",
        "## Targets",
        "",
        markdown_table(
            targets,
            [("target", "target"), ("measured", "measured"), ("threshold", "threshold"), ("verdict", "verdict")],
        ),
        "",
        "## In-process limit (onnxruntime, same file, same thread settings)",
        "",
    ]
    for model in models:
        limit = limits[model.name]
        points = [{**p, "model": model.name} for p in limit["points"]]
        lines += [
            f"`{model.name}` version {model.version} ({_shown(model.onnx)}), "
            f"intra_op {model.intra_op}, inter_op {model.inter_op}: best {limit['best']['inferences_per_s']:,.1f} "
            f"inferences/s at batch {limit['best']['batch']} (measured before and after the servers ran: "
            f"{limit['before_servers']['inferences_per_s']:,.1f} and {limit['after_servers']['inferences_per_s']:,.1f}"
            "; the higher is the limit, its batch sweep below).",
            "",
            markdown_table(
                points, [("batch", "batch"), ("ms_per_run", "ms per run"), ("inferences_per_s", "inferences/s")]
            ),
            "",
        ]
    lines += ["## Served (wrk, closed loop)", "", markdown_table(rows, COLUMNS), ""]
    lines += [
        "`server CPU` is the server process's CPU seconds per wall second during the point (1.0 = its core "
        "saturated); `others on core` is what every other process took of the server's core meanwhile "
        "(neighbours' test runs: a point with a high figure there was measured on a busy core); `req per CPU-s` "
        "= req/s divided by server CPU, the throughput the server would reach owning its core. `failed` "
        "counts non-2xx answers and socket errors (none expected).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s points, 1 s warm-up; results to runs/bench/")
    parser.add_argument("--models", default="resnet,digits")
    parser.add_argument("--repository", type=Path, default=REPO / "models")
    parser.add_argument("--results", type=Path, default=None, help="folder for modelserver.{md,json}")
    parser.add_argument("--skip-kserve", action="store_true", help="measure ours only (no ratio vs KServe)")
    args = parser.parse_args(argv)
    timing = (
        {"seconds": 3.0, "warmup": 1.0, "batch_seconds": 1.0, "quiet": 5.0, "attempts": 1}
        if args.quick
        else {"seconds": 10.0, "warmup": 2.0, "batch_seconds": 2.0, "quiet": 30.0, "attempts": 3}
    )
    results_dir = args.results or (REPO / "runs" / "bench" if args.quick else Path(__file__).with_name("results"))
    repository = args.repository.resolve()
    kserve_python = None if args.skip_kserve else ensure_kserve()
    kserve_version = (
        "not run"
        if kserve_python is None
        else subprocess.run(
            [str(kserve_python), "-c", "import importlib.metadata as m; print(m.version('kserve'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    facts = machine_facts(REPO, {"kserve": kserve_version, **timing})

    models = [model_under_test(repository, name) for name in args.models.split(",")]
    limits, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        log_config = work / "kserve-logging.json"
        log_config.write_text(json.dumps(KSERVE_LOG_CONFIG))
        for model in models:
            print(f"{model.name}: in-process limit", flush=True)
            wait_for_quiet((SERVER_CORE,), QUIET_BUSY, QUIET_WINDOW_S, timing["quiet"])
            before = in_process_limit(model, timing["batch_seconds"])
            print(f"  best {before['best']}", flush=True)
            bodies = write_bodies(
                model.input_name, sample((1, *model.item_shape)), model.output_name, work / model.name
            )
            port = free_port()
            rows += load_points("ours", ours_command(repository, model, port), port, model, bodies, work, timing)
            if kserve_python is not None:
                port = free_port()
                cmd = kserve_command(kserve_python, model, port, log_config)
                rows += load_points("kserve", cmd, port, model, bodies, work, timing)
            print(f"{model.name}: in-process limit again", flush=True)
            wait_for_quiet((SERVER_CORE,), QUIET_BUSY, QUIET_WINDOW_S, timing["quiet"])
            limits[model.name] = merge_limits(before, in_process_limit(model, timing["batch_seconds"]))
    facts["load_average_end"] = load_average()
    targets = evaluate(rows, limits)
    markdown = render(facts, models, limits, rows, targets)
    payload = {
        "machine": facts,
        "models": [{**asdict(m), "onnx": _shown(m.onnx)} for m in models],
        "in_process": limits,
        "served": rows,
        "targets": targets,
    }
    json_path, md_path = write_results(results_dir, "modelserver", payload, markdown)
    print(markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
