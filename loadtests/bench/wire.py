"""What the v2 wire costs in-process: the model server's per-request codec work, and the pipeline's hop formats.

    .venv/bin/python -m loadtests.bench.wire [--number 5000] [--repeat 9]

1. The model server's REST infer path without HTTP and inference: `split_body` + `decode_request` +
   `write_response` for the digits request tritonclient writes (binary, [1,1,8,8] FP32) and a binary
   [1,10] answer. Run it at two commits to price a change to services/common/v2wire.py or
   services/modelserver/codec.py.
2. One pipeline stage hop's tensor, written and read: the raw FP32 frame (`x-tensor-shape`) against
   the v2 binary encoding (write_response + read_response), for the pipeline's tensors and an image.
   This is the measurement behind keeping the raw frame between stages (services/common/v2wire.py).

Best of `--repeat` runs of `--number` calls, in microseconds; printed, not written (a few seconds).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import numpy as np

from loadtests.bench.v2 import request_body
from services.common.v2wire import (
    SHAPE_HEADER,
    raw_headers,
    read_raw,
    read_response,
    split_body,
    write_response,
)
from services.modelserver.codec import decode_request
from services.modelserver.signature import Signature, TensorSig

HOP_SHAPES = ((1, 1, 8, 8), (1, 10), (1, 3, 224, 224))


def best_us(call: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def model_server_request() -> Callable[[], object]:
    """One digits request through the REST path's wire work, as app.py runs it."""
    tensor = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    body, headers = request_body("input", tensor, "logits", "binary")
    length = headers["Inference-Header-Content-Length"]
    signature = Signature(
        inputs={"input": TensorSig("input", "FP32", (-1, 1, 8, 8))},
        outputs={"logits": TensorSig("logits", "FP32", (-1, 10))},
        max_batch_size=32,
    )
    logits = np.ones((1, 10), np.float32)

    def one() -> object:
        header, binary = split_body(body, length)
        request = decode_request(header, binary, signature)
        return write_response("digits", "1", request.id, [("logits", "FP32", logits, True)])

    return one


def hop_formats(shape: tuple[int, ...]) -> tuple[Callable[[], object], Callable[[], object]]:
    tensor = np.random.default_rng(0).random(shape, dtype=np.float32)

    def raw() -> object:
        body, headers = tensor.tobytes(), raw_headers(tensor.shape)
        return read_raw(body, headers[SHAPE_HEADER])

    def v2() -> object:
        body, length = write_response("stage", "1", None, [("tensor", "FP32", tensor, True)])
        return read_response(body, str(length))["tensor"]

    return raw, v2


def measure(number: int, repeat: int) -> dict:
    rows = {"model_server_request_us": best_us(model_server_request(), number, repeat), "hops": []}
    for shape in HOP_SHAPES:
        raw, v2 = hop_formats(shape)
        calls = max(1, number // max(1, int(np.prod(shape)) // 4096))  # large tensors: fewer calls
        rows["hops"].append(
            {"shape": list(shape), "raw_us": best_us(raw, calls, repeat), "v2_us": best_us(v2, calls, repeat)}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per timed run (default 5000)")
    parser.add_argument("--repeat", type=int, default=9, help="timed runs, the best is kept (default 9)")
    args = parser.parse_args(argv)
    rows = measure(args.number, args.repeat)
    print(f"model server, split + decode_request + write_response: {rows['model_server_request_us']:.2f} us")
    for hop in rows["hops"]:
        print(f"hop {hop['shape']}: raw frame {hop['raw_us']:.2f} us, v2 binary {hop['v2_us']:.2f} us (write + read)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
