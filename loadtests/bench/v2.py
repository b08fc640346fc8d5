"""Open Inference Protocol (v2) request bodies for the load generator, and a correctness check.

Bodies are built by tritonclient.http (the reference v2 client), so the load is byte for byte
what real clients send: binary = JSON header + raw tensor bytes with Inference-Header-Content-Length;
JSON = every value in `data` (tritonclient writes FP32 values as doubles, ~19 characters each).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import tritonclient.http as triton

ENCODINGS = ("binary", "json")


@dataclass(frozen=True)
class Body:
    """One request body on disk plus the headers wrk must send with it."""

    encoding: str
    path: Path
    headers: dict[str, str]
    size: int


def request_body(input_name: str, array: np.ndarray, output_name: str, encoding: str) -> tuple[bytes, dict]:
    """(body, headers) of one v2 infer request as tritonclient would send it."""
    binary = encoding == "binary"
    tensor = triton.InferInput(input_name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    wanted = triton.InferRequestedOutput(output_name, binary_data=binary)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=[wanted])
    if binary:
        return body, {"Inference-Header-Content-Length": str(json_size)}
    # tritonclient sends no Content-Type; KServe's FastAPI route needs it to parse JSON at all.
    return body, {"Content-Type": "application/json"}


def compact_json_body(input_name: str, array: np.ndarray) -> bytes:
    """The same tensor as JSON with float32's shortest repr (orjson): the leanest JSON a client can send."""
    return orjson.dumps(
        {"inputs": [{"name": input_name, "shape": list(array.shape), "datatype": "FP32", "data": array.ravel()}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def write_bodies(input_name: str, array: np.ndarray, output_name: str, folder: Path) -> dict[str, Body]:
    """Both encodings of one request, written under `folder` for wrk's Lua script to read."""
    folder.mkdir(parents=True, exist_ok=True)
    bodies = {}
    for encoding in ENCODINGS:
        body, headers = request_body(input_name, array, output_name, encoding)
        path = folder / f"{encoding}.body"
        path.write_bytes(body)
        bodies[encoding] = Body(encoding, path, headers, len(body))
    return bodies


def check_answer(
    base_url: str, model: str, input_name: str, array: np.ndarray, output_name: str, expected: np.ndarray
) -> None:
    """Infer once per encoding with tritonclient; raise unless the answer matches `expected`."""
    client = triton.InferenceServerClient(base_url.removeprefix("http://"))
    try:
        for encoding in ENCODINGS:
            binary = encoding == "binary"
            tensor = triton.InferInput(input_name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=binary)
            wanted = triton.InferRequestedOutput(output_name, binary_data=binary)
            headers = None if binary else {"Content-Type": "application/json"}
            got = client.infer(model, [tensor], outputs=[wanted], headers=headers).as_numpy(output_name)
            if got is None or got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
                raise AssertionError(f"{base_url} {model} ({encoding}) answered differently from onnxruntime")
    finally:
        client.close()
