"""Triton's statistics extension, kept per serving version: cumulative counts and nanoseconds.

Prometheus histograms hold the same times in seconds for dashboards; this is the exact shape
`GET /v2/models/<m>/stats` and gRPC `ModelStatistics` answer (what perf_analyzer reads), so the
hot path pays a few integer additions, no lock (everything runs on the event loop).
"""

from __future__ import annotations

import time

_NS = 1_000_000_000


class VersionStats:
    __slots__ = (
        "batches",
        "compute_infer",
        "compute_input",
        "compute_output",
        "executions",
        "fail",
        "inferences",
        "last_inference",
        "queue",
        "success",
    )

    def __init__(self) -> None:
        # each a [count, ns] pair, as Triton's StatisticDuration
        self.success = [0, 0]
        self.fail = [0, 0]
        self.queue = [0, 0]
        self.compute_input = [0, 0]
        self.compute_infer = [0, 0]
        self.compute_output = [0, 0]
        self.inferences = 0
        self.executions = 0
        self.last_inference = 0  # ms since the epoch
        self.batches: dict[int, list[int]] = {}  # batch size -> [executions, input ns, infer ns, output ns]

    def request(self, ok: bool, seconds: float) -> None:
        pair = self.success if ok else self.fail
        pair[0] += 1
        pair[1] += int(seconds * _NS)

    def queued(self, requests: int, seconds: float) -> None:
        """`requests` left the queue together, having waited `seconds` in all (one call per batch)."""
        self.queue[0] += requests
        self.queue[1] += int(seconds * _NS)

    def executed(self, rows: int, requests: int, input_s: float, infer_s: float, output_s: float) -> None:
        """One execution of `rows` batch items for `requests` requests; each request is charged the
        execution's compute times, as Triton does."""
        self.inferences += rows
        self.executions += 1
        self.last_inference = time.time_ns() // 1_000_000
        times = (int(input_s * _NS), int(infer_s * _NS), int(output_s * _NS))
        for pair, ns in zip((self.compute_input, self.compute_infer, self.compute_output), times, strict=True):
            pair[0] += requests
            pair[1] += ns * requests
        row = self.batches.get(rows)
        if row is None:
            row = self.batches[rows] = [0, 0, 0, 0]
        row[0] += 1
        row[1] += times[0]
        row[2] += times[1]
        row[3] += times[2]


def _duration(pair: list[int]) -> dict:
    return {"count": pair[0], "ns": pair[1]}


def statistics(model: str, version: str, stats: VersionStats) -> dict:
    """One entry of Triton's `model_stats` list (the JSON of inference.ModelStatistics)."""
    zero = {"count": 0, "ns": 0}
    return {
        "name": model,
        "version": version,
        "last_inference": stats.last_inference,
        "inference_count": stats.inferences,
        "execution_count": stats.executions,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": _duration(stats.compute_input),
            "compute_infer": _duration(stats.compute_infer),
            "compute_output": _duration(stats.compute_output),
            "cache_hit": dict(zero),
            "cache_miss": dict(zero),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": {"count": row[0], "ns": row[1]},
                "compute_infer": {"count": row[0], "ns": row[2]},
                "compute_output": {"count": row[0], "ns": row[3]},
            }
            for size, row in sorted(stats.batches.items())
        ],
        "memory_usage": [],
    }
