"""In-process onnxruntime throughput: the ceiling any server of the same model can approach.

Run it pinned to the core the servers get (the benchmark does:
`taskset -c 0 python -m loadtests.bench.ortlimit MODEL.onnx ...`), with the thread settings the
server's config gives, so "served / in-process" compares like with like. Also prices the JSON
path: decoding one v2 JSON body (orjson + numpy) against one inference of the same input.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import orjson

from loadtests.bench.v2 import compact_json_body, request_body


def open_session(onnx_path: str, intra_op: int, inter_op: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op
    options.inter_op_num_threads = inter_op
    return ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


def sample(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A deterministic FP32 input in [0, 1)."""
    return np.random.default_rng(seed).random(tuple(shape), dtype=np.float32)


def measure_batch(session: ort.InferenceSession, feeds: dict, batch: int, seconds: float) -> dict:
    """Run `feeds` repeatedly for about `seconds` (at least 3 runs) after one warm-up run."""
    session.run(None, feeds)
    runs, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        session.run(None, feeds)
        runs += 1
        elapsed = time.perf_counter() - start
        if runs >= 3 and elapsed >= seconds:
            break
    cpu = time.process_time() - cpu_start
    return {
        "batch": batch,
        "runs": runs,
        "seconds": round(elapsed, 3),
        "ms_per_run": round(1000 * elapsed / runs, 3),
        "inferences_per_s": round(batch * runs / elapsed, 1),
        # per CPU second of this process: what the figure would be with the core to ourselves
        "inferences_per_cpu_s": round(batch * runs / cpu, 1) if cpu > 0 else 0.0,
    }


def best_batch(
    session: ort.InferenceSession, input_name: str, item_shape: Sequence[int], batches: Sequence[int], seconds: float
) -> dict:
    """Throughput at each batch size and the best of them (the limit)."""
    points = [measure_batch(session, {input_name: sample((b, *item_shape))}, b, seconds) for b in batches]
    best = max(points, key=lambda p: p["inferences_per_s"])
    return {"points": points, "best": best}


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def decode_cost(body: bytes, shape: Sequence[int], repeats: int) -> dict:
    """Median cost of turning one v2 JSON body into the input array: orjson.loads, then numpy."""
    data = orjson.loads(body)["inputs"][0]["data"]
    loads_ms = _median_ms(lambda: orjson.loads(body), repeats)
    numpy_ms = _median_ms(lambda: np.asarray(data, dtype=np.float32).reshape(shape), repeats)
    return {
        "body_bytes": len(body),
        "orjson_loads_ms": round(loads_ms, 3),
        "numpy_convert_ms": round(numpy_ms, 3),
        "decode_ms": round(loads_ms + numpy_ms, 3),
    }


def json_decode_cost(session: ort.InferenceSession, input_name: str, item_shape: Sequence[int], repeats: int) -> dict:
    """JSON decoding of one batch-1 body (as tritonclient writes it, and compact) vs one inference."""
    array = sample((1, *item_shape))
    output_name = session.get_outputs()[0].name
    infer_ms = _median_ms(lambda: session.run(None, {input_name: array}), repeats)
    raw = array.tobytes()
    binary_ms = _median_ms(lambda: np.frombuffer(raw, dtype=np.float32).reshape(array.shape), repeats)
    bodies = {
        "tritonclient": request_body(input_name, array, output_name, "json")[0],
        "compact": compact_json_body(input_name, array),
    }
    result: dict = {"inference_ms": round(infer_ms, 3), "binary_decode_ms": round(binary_ms, 4)}
    for label, body in bodies.items():
        cost = decode_cost(body, array.shape, repeats)
        cost["over_inference"] = round(cost["decode_ms"] / infer_ms, 3)
        result[label] = cost
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx")
    parser.add_argument("--input-name", required=True)
    parser.add_argument("--item-shape", required=True, help="shape of one item, e.g. 3,224,224")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--intra-op", type=int, default=1)
    parser.add_argument("--inter-op", type=int, default=1)
    parser.add_argument("--json-repeats", type=int, default=20)
    args = parser.parse_args(argv)
    item_shape = [int(d) for d in args.item_shape.split(",")]
    session = open_session(args.onnx, args.intra_op, args.inter_op)
    result = best_batch(session, args.input_name, item_shape, [int(b) for b in args.batches.split(",")], args.seconds)
    result["json_decode"] = json_decode_cost(session, args.input_name, item_shape, args.json_repeats)
    result["threads"] = {"intra_op": args.intra_op, "inter_op": args.inter_op}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
