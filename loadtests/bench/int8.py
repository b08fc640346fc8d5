"""FP32 against INT8 for digits and resnet: `python -m loadtests.bench.int8 [--out DIR] [--core N]`.

Runs the lifecycle's own path on a temporary copy of each model's repository folder: quantize v1
(`meshserve model optimize --int8`: static QDQ for these convolutional graphs, calibrated on the
evaluation data) and publish it through the gates, recording the published figures whether the
gates pass or not: accuracy (digits) or top-1 agreement with the FP32 parent (resnet, random
weights, generated inputs), file size, single-core latency at batch 1 and throughput at the best
batch, FP32 and INT8 measured in turns in one process pinned to one core. Also records which INT8
instructions the CPU offers (VNNI: int8 dot products that onnxruntime's INT8 kernels use).

Short runs (~0.4 s per batch size and model) on a shared machine: the ratios hold better than the
absolute figures. Writes results/int8.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from lifecycle import optimize
from lifecycle.publish import load_model, publish
from lifecycle.store import LocalStore
from loadtests.bench.machine import machine_facts

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_tile")


def cpu_flags() -> dict[str, bool]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return {}
    flags = set(line.split(":", 1)[1].split())
    return {flag: flag in flags for flag in INT8_FLAGS}


def run_model(name: str, budget_s: float, source: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshserve-int8-bench-") as tmp:
        repo = Path(tmp)
        shutil.copytree(REPO / "models" / name, repo / name)
        store = LocalStore(repo)
        model = load_model(store, name)
        fp32 = store.read(f"{name}/{source}/model.onnx")
        plan = optimize.choose(fp32, model.contract)
        int8 = optimize.quantize(fp32, plan, model.data, model.contract.calibration_count)
        # force: the figures are recorded whatever the gates say; the verdict is recorded beside them.
        outcome = publish(
            store, name, int8, stable=source, parent=source, produced_by={"how": f"int8 {plan.method}"},
            force=True, log=print, measure_budget_s=budget_s,
        )  # fmt: skip
        meta = outcome.metadata
        failed = [f"{g.name} ({g.observed}, bound {g.bound})" for g in outcome.gates if not g.passed]
        refused = "; ".join(failed) or None
    evaluation, perf = meta["evaluation"], meta["performance"]
    return {
        "model": name,
        "source_version": source,
        "method": plan.method,
        "why": plan.why,
        "metric": evaluation["metric"],
        "fp32": {
            "metric": 1.0 if evaluation["metric"] == "agreement" else evaluation["stable_value"],
            "size_bytes": len(fp32),
            "latency_b1_ms": perf["baseline"]["latency_b1_ms"],
            "cpu_b1_ms": perf["baseline"]["cpu_b1_ms"],
            "throughput_rows_per_s": perf["baseline"]["throughput_rows_per_s"],
            "throughput_rows_per_cpu_s": perf["baseline"]["throughput_rows_per_cpu_s"],
            "best_batch": perf["baseline"]["best_batch"],
            "batches": perf["baseline"]["batches"],
        },
        "int8": {
            "metric": evaluation["value"],
            "agreement_with_fp32": evaluation["agreement_with_stable"],
            "output_correlation_with_fp32": evaluation["output_correlation_with_stable"],
            "fp32_distinct_answers": evaluation["stable_distinct_answers"],
            "size_bytes": len(int8),
            "latency_b1_ms": perf["candidate"]["latency_b1_ms"],
            "cpu_b1_ms": perf["candidate"]["cpu_b1_ms"],
            "throughput_rows_per_s": perf["candidate"]["throughput_rows_per_s"],
            "throughput_rows_per_cpu_s": perf["candidate"]["throughput_rows_per_cpu_s"],
            "best_batch": perf["candidate"]["best_batch"],
            "batches": perf["candidate"]["batches"],
        },
        "gates": evaluation["gates"],
        "published": refused is None,
        "refused": refused,
        "evaluation_rows": evaluation["rows"],
        "evaluation_data": evaluation["data"],
    }


def render(data: dict) -> str:
    m = data["machine"]
    flags = ", ".join(f for f, on in data["cpu_int8_flags"].items() if on) or "none"
    lines = [
        "# FP32 against INT8 (`python -m loadtests.bench.int8`)",
        "",
        f"Run {m['date_utc']} UTC on {m['cpu_model']}, {m['cores']} cores (pinned to core {data['core']}), "
        f"onnxruntime {m['onnxruntime']}, commit {m['commit']}. "
        f"Load average (1/5/15 min) at start {m['load_average_1_5_15']}, "
        f"at end {data.get('load_average_at_end')}.",
        f"CPU flags for INT8: {flags} (VNNI: {'yes' if data['vnni'] else 'no'}).",
        "",
        "One onnxruntime thread (it computes in the calling thread, so that thread's CPU time is the compute time "
        "even while neighbours take the core away; wall-clock beside it), CPU provider; FP32 and INT8 measured in "
        f"turns ({data['budget_s_per_batch_size']} s per batch size each), "
        "on a machine shared with other engineers' test runs: short runs, absolute figures move with the load.",
        "",
        "| model | quantization | metric | FP32 | INT8 | INT8 output correlation with FP32 | size FP32 -> INT8 "
        "| batch-1 latency FP32 -> INT8, CPU time (wall) | throughput FP32 -> INT8 per CPU-second (best batch) "
        "| gates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["models"]:
        f, q = r["fp32"], r["int8"]
        metric = "accuracy (held-out)" if r["metric"] == "accuracy" else "top-1 agreement with FP32"
        verdict = "passed, published" if r["published"] else f"**refused**: {r['refused']}"
        ratio = q["size_bytes"] / f["size_bytes"]
        size = f"{f['size_bytes'] / 1e6:.2f} MB -> {q['size_bytes'] / 1e6:.2f} MB ({ratio:.2f}x)"
        speed = f"{f['cpu_b1_ms'] / q['cpu_b1_ms']:.2f}x speed"
        lines.append(
            f"| {r['model']} | {r['method']} | {metric} | {f['metric']:.4f} | {q['metric']:.4f} | "
            f"{q['output_correlation_with_fp32']:.4f} | {size} | "
            f"{f['cpu_b1_ms']:.3f} -> {q['cpu_b1_ms']:.3f} ms ({speed}; wall {f['latency_b1_ms']:.3f} -> "
            f"{q['latency_b1_ms']:.3f}) | "
            f"{f['throughput_rows_per_cpu_s']:.0f} (b{f['best_batch']}) -> {q['throughput_rows_per_cpu_s']:.0f} "
            f"(b{q['best_batch']}) rows/s | {verdict} |"
        )
    lines += ["", "Per batch size (median thread CPU ms per run; wall-clock in int8.json):", ""]
    for r in data["models"]:
        fp32, int8 = r["fp32"]["batches"], r["int8"]["batches"]
        per_batch = [f"b{b}: FP32 {fp32[b]['cpu_median_ms']} ms / INT8 {int8[b]['cpu_median_ms']} ms" for b in fp32]
        lines.append(f"- {r['model']}: " + "; ".join(per_batch))
    lines += [
        "",
        "Output correlation: Pearson correlation of INT8 and FP32 outputs after removing FP32's per-class mean over "
        "the evaluation data (lifecycle/evaluate.py `score_correlation`); it shows whether the input-dependent part "
        "of the answer survived. FP32's top-1 answers take "
        + ", ".join(
            f"{r['int8']['fp32_distinct_answers']} distinct classes over {r['evaluation_rows']} inputs ({r['model']})"
            for r in data["models"]
        )
        + ": with random weights resnet's answer barely depends on its input, so top-1 agreement alone is weak "
        "evidence there.",
    ]
    lines += ["", "Why each method: " + " ".join(f"{r['model']}: {r['why']}." for r in data["models"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--core", type=int, default=0, help="pin this process to one core (single-core figures)")
    parser.add_argument("--models", default="digits,resnet")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per batch size and model (default 2)")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    flags = cpu_flags()
    data = {
        "machine": machine_facts(REPO),
        "core": args.core,
        "cpu_int8_flags": flags,
        "vnni": bool(flags.get("avx512_vnni") or flags.get("avx_vnni")),
        "budget_s_per_batch_size": args.budget,
        "models": [run_model(name, args.budget) for name in args.models.split(",")],
    }
    data["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "int8.md").write_text(render(data))
    print(render(data))


if __name__ == "__main__":
    main()
