"""The benchmark script's pure parts: model discovery, batch sweep, limits and target verdicts."""

from __future__ import annotations

from pathlib import Path

from loadtests.bench.modelserver import batch_sizes, evaluate, merge_limits, model_under_test
from loadtests.bench.ortlimit import json_decode_cost, measure_batch, open_session, sample

REPO = Path(__file__).parents[3]


def test_model_under_test_reads_the_repository_like_the_server() -> None:
    digits = model_under_test(REPO / "models", "digits")
    assert digits.version == max(int(p.name) for p in (REPO / "models" / "digits").iterdir() if p.name.isdigit())
    assert (digits.input_name, digits.output_name, digits.item_shape) == ("input", "logits", (1, 8, 8))
    assert (digits.intra_op, digits.inter_op) == (1, 1)


def test_batch_sizes_are_powers_of_two_up_to_the_max() -> None:
    assert batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert batch_sizes(0) == [1]
    assert batch_sizes(100) == [1, 2, 4, 8, 16, 32, 64]


def _limit(best: float, per_cpu: float) -> dict:
    point = {"batch": 4, "inferences_per_s": best, "inferences_per_cpu_s": per_cpu}
    return {"best": point, "points": [point], "json_decode": {"from": best}}


def test_merge_limits_keeps_the_higher_measurement() -> None:
    merged = merge_limits(_limit(100.0, 150.0), _limit(120.0, 130.0))
    assert merged["best"]["inferences_per_s"] == 120.0
    assert merged["best_per_cpu"]["inferences_per_cpu_s"] == 150.0
    assert (merged["before_servers"]["inferences_per_s"], merged["after_servers"]["inferences_per_s"]) == (100, 120)


def _row(server: str, model: str, encoding: str, rps: float, p99: float) -> dict:
    return {"server": server, "model": model, "encoding": encoding, "concurrency": 32, "rps": rps, "p99_ms": p99}


def test_evaluate_applies_both_targets() -> None:
    decode = {
        "inference_ms": 4.0,
        **{k: {"body_bytes": 10**6, "decode_ms": 1.0, "over_inference": 0.25} for k in ("tritonclient", "compact")},
    }
    limits = {"resnet": {"best": {"inferences_per_s": 200.0}, "json_decode": decode}}
    rows = [
        _row("ours", "resnet", "binary", 171.0, 300.0),
        _row("ours", "resnet", "json", 100.0, 400.0),
        _row("ours", "digits", "binary", 7500.0, 10.0),
        _row("kserve", "digits", "binary", 3000.0, 12.0),
        _row("ours", "digits", "json", 9000.0, 20.0),
        _row("kserve", "digits", "json", 3000.0, 12.0),  # fast enough but worse p99: a miss
    ]
    verdicts = {t["target"]: t["verdict"] for t in evaluate(rows, limits)}
    assert verdicts["resnet binary c32: ours / in-process limit"] == "PASS"
    assert verdicts["resnet json c32: ours / in-process limit"] == "-"
    assert verdicts["digits binary c32: ours / KServe, p99 no worse"] == "PASS"
    assert verdicts["digits json c32: ours / KServe, p99 no worse"] == "MISS"


def test_in_process_measurement_shapes() -> None:
    digits = model_under_test(REPO / "models", "digits")
    session = open_session(str(digits.onnx), 1, 1)
    point = measure_batch(session, {"input": sample((2, *digits.item_shape))}, 2, seconds=0.0)
    assert point["runs"] >= 3 and point["batch"] == 2
    cost = json_decode_cost(session, "input", digits.item_shape, repeats=3)
    assert cost["compact"]["body_bytes"] < cost["tritonclient"]["body_bytes"]
