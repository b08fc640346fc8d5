"""Evaluation: run a version on its model's evaluation data through the model server's own onnxruntime
code path (services/modelserver/runtime.py: the same session options, providers and signature check
against config.yaml), and measure its single-core latency and throughput.

Measurements are short (a fraction of a second per batch size) and taken on whatever machine runs the
command: they compare a candidate with its baseline measured the same way, moments apart.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lifecycle.contract import Contract
from services.common.datatypes import V2_TO_NUMPY
from services.modelserver.config import ModelConfig, Optimization
from services.modelserver.runtime import Runtime

EVAL_BATCH = 32  # rows per run while evaluating (bounded memory for large inputs)


@dataclass(frozen=True)
class EvalData:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str  # where it came from, for the record

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values())))

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: array[start:stop] for name, array in self.inputs.items()}


def single_core(config: ModelConfig) -> ModelConfig:
    """The config with one onnxruntime thread and the CPU provider: the figures compare like with like."""
    cpu = Optimization(execution_accelerators=["cpu"], intra_op_num_threads=1, inter_op_num_threads=1)
    return config.model_copy(update={"optimization": cpu})


def load_runtime(model_bytes: bytes, config: ModelConfig, label: str) -> Runtime:
    """A server Runtime; ValueError (naming the tensor) when the graph does not match config.yaml's signature."""
    one = single_core(config)
    one = one.model_copy(update={"instance_group": one.instance_group.model_copy(update={"count": 1})})
    try:
        return Runtime(model_bytes, one, label)
    except ValueError:
        raise
    except Exception as exc:  # onnxruntime: not a model, unsupported operator, ...
        raise ValueError(f"{label}: onnxruntime cannot load it: {type(exc).__name__}: {exc}") from None


def load_data(contract: Contract, config: ModelConfig, read: Callable[[str], bytes], model: str) -> EvalData:
    """The contract's data set: .npy files read from the repository, or seeded inputs from the signature."""
    data = contract.data
    if data.generate is not None:
        rng = np.random.default_rng(data.generate.seed)
        inputs = {}
        for spec in config.input:
            dims = [d if d > 0 else 1 for d in spec.dims]
            dtype = V2_TO_NUMPY[spec.data_type]
            inputs[spec.name] = rng.standard_normal((data.generate.count, *dims)).astype(dtype)
        return EvalData(inputs, None, f"generated: normal, seed {data.generate.seed}, {data.generate.count} rows")
    inputs = {
        name: np.load(io.BytesIO(read(f"{model}/{path}")), allow_pickle=False) for name, path in data.inputs.items()
    }
    labels = np.load(io.BytesIO(read(f"{model}/{data.labels}")), allow_pickle=False) if data.labels else None
    counts = {len(a) for a in inputs.values()} | ({len(labels)} if labels is not None else set())
    if len(counts) != 1:
        raise ValueError(f"{model}/evaluation data: inputs and labels differ in length ({sorted(counts)})")
    return EvalData(inputs, labels, ", ".join([*data.inputs.values(), *([data.labels] if data.labels else [])]))


def predict(runtime: Runtime, contract: Contract, data: EvalData) -> np.ndarray:
    """The scored output (rows x classes) for every row of the evaluation data."""
    output = contract.output or next(iter(runtime.signature.outputs))
    scores = []
    for start in range(0, data.count, EVAL_BATCH):
        (logits,) = runtime.run(data.rows(start, start + EVAL_BATCH), [output])
        scores.append(np.asarray(logits, dtype=np.float64).reshape(len(logits), -1))
    return np.concatenate(scores)


def top1(scores: np.ndarray) -> np.ndarray:
    return scores.argmax(axis=1)


def score_correlation(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Pearson correlation of the two outputs after removing the reference's per-class mean over the data.

    Top-1 agreement is a coarse figure when a model's answers barely depend on the input (resnet's random
    weights give two classes for 32 inputs): this one shows whether the input-dependent part of the
    output survived (1.0 = identical up to scale), and is recorded beside it.
    """
    mean = reference.mean(axis=0, keepdims=True)
    a, b = (candidate - mean).ravel(), (reference - mean).ravel()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def accuracy(top1: np.ndarray, labels: np.ndarray) -> float:
    return float((top1 == labels).mean())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def batch_sizes(contract: Contract, config: ModelConfig) -> list[int]:
    """What to measure: the contract's sizes, else 1, the preferred batch sizes and max_batch_size."""
    if contract.batch_sizes:
        return sorted(set(contract.batch_sizes))
    sizes = {1}
    if config.max_batch_size > 0:
        sizes.add(config.max_batch_size)
        if config.dynamic_batching:
            sizes.update(config.dynamic_batching.preferred_batch_size)
    return sorted(s for s in sizes if config.max_batch_size == 0 or s <= config.max_batch_size)


def _batch(data: EvalData, size: int) -> dict[str, np.ndarray]:
    idx = np.arange(size) % data.count
    return {name: np.ascontiguousarray(array[idx]) for name, array in data.inputs.items()}


def measure(runtimes: dict[str, Runtime], data: EvalData, sizes: list[int], budget_s: float = 0.4) -> dict[str, dict]:
    """Per runtime and batch size: wall-clock and thread CPU time per run (median), rows/s; one thread.

    onnxruntime with one intra-op and one inter-op thread computes in the calling thread, so that
    thread's CPU time is the model's compute time even when neighbours on a shared machine take the
    core away now and then (wall-clock time counts those pauses): the gates compare CPU times, and
    both are recorded. The runtimes also take turns in short rounds (A B A B ...) so that a drift of
    the machine (frequency, caches) weighs on each alike.
    """
    rounds = 4
    samples: dict[str, dict[int, list[tuple[float, float]]]] = {label: {s: [] for s in sizes} for label in runtimes}
    for size in sizes:
        feeds = _batch(data, size)
        for runtime in runtimes.values():  # warm-up
            outputs = list(runtime.signature.outputs)
            warm_until = time.perf_counter() + 0.05
            for _ in range(3):
                runtime.run(feeds, outputs)
            while time.perf_counter() < warm_until:
                runtime.run(feeds, outputs)
        for _ in range(rounds):
            for label, runtime in runtimes.items():
                outputs = list(runtime.signature.outputs)
                runs = samples[label][size]
                deadline = time.perf_counter() + budget_s / rounds
                taken = 0
                while taken < 50 and (taken < 2 or time.perf_counter() < deadline):
                    wall, cpu = time.perf_counter(), time.thread_time()
                    runtime.run(feeds, outputs)
                    runs.append((time.perf_counter() - wall, time.thread_time() - cpu))
                    taken += 1
    return {label: _figures(per_size, budget_s) for label, per_size in samples.items()}


def _figures(per_size_runs: dict[int, list[tuple[float, float]]], budget_s: float) -> dict:
    figures: dict = {"threads": 1, "budget_s_per_size": budget_s}
    per_size = {}
    for size, runs in per_size_runs.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        wall, cpu = statistics.median(walls), max(statistics.median(cpus), 1e-9)
        per_size[size] = {
            "median_ms": round(wall * 1000, 4),
            "cpu_median_ms": round(cpu * 1000, 4),
            "rows_per_s": round(size / wall, 1),
            "rows_per_cpu_s": round(size / cpu, 1),
            "runs": len(runs),
        }
        if size == 1:
            figures["latency_b1_ms"] = round(wall * 1000, 4)
            figures["latency_b1_p90_ms"] = round(sorted(walls)[int(0.9 * (len(walls) - 1))] * 1000, 4)
            figures["cpu_b1_ms"] = round(cpu * 1000, 4)
    best = max(per_size, key=lambda s: per_size[s]["rows_per_cpu_s"])
    figures["batches"] = {str(s): v for s, v in per_size.items()}
    figures["best_batch"] = best
    figures["throughput_rows_per_s"] = per_size[best]["rows_per_s"]
    figures["throughput_rows_per_cpu_s"] = per_size[best]["rows_per_cpu_s"]
    return figures
