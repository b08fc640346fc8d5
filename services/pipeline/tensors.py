"""Tensors on the wire between pipeline hops, lean: raw little-endian FP32 bytes plus a shape header.

A stage answers `Accept: application/octet-stream` with the raw bytes and `x-tensor-shape: 1,1,8,8`
(and `x-tensor-datatype: FP32`); otherwise with a v2 JSON tensor {"name", "datatype", "shape", "data"}.
Model calls use the Open Inference Protocol's binary tensor extension, as tritonclient.http does.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import orjson

from services.pipeline.service import BadRequest

OCTET = "application/octet-stream"
SHAPE_HEADER = "x-tensor-shape"
DATATYPE_HEADER = "x-tensor-datatype"
HEADER_LENGTH = "inference-header-content-length"


def shape_header(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise BadRequest(400, f"{SHAPE_HEADER} {text!r} is not a comma-separated list of sizes") from None
    if not shape or any(d < 0 for d in shape):
        raise BadRequest(400, f"{SHAPE_HEADER} {text!r} is not a shape")
    return shape


def from_raw(body: bytes, shape_text: str | None) -> np.ndarray:
    """Raw FP32 bytes + x-tensor-shape -> array; the sizes must agree."""
    if shape_text is None:
        raise BadRequest(400, f"a binary tensor needs the {SHAPE_HEADER} header, e.g. '1,10'")
    shape = parse_shape(shape_text)
    expected = 4 * int(np.prod(shape))
    if len(body) != expected:
        raise BadRequest(400, f"{len(body)} bytes do not hold an FP32 tensor of shape {list(shape)} ({expected} bytes)")
    return np.frombuffer(body, dtype="<f4").reshape(shape)


def v2_infer_request(name: str, tensor: np.ndarray, outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    """A binary v2 infer body for one FP32 input, asking for binary outputs; and its headers."""
    raw = np.ascontiguousarray(tensor, dtype="<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(tensor.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs],
        }
    )
    return header + raw, {HEADER_LENGTH: str(len(header)), "content-type": OCTET}


def v2_output(body: bytes, headers: Mapping[str, str], name: str) -> np.ndarray:
    """One FP32 output of a v2 infer response (binary extension or plain JSON)."""
    length = headers.get(HEADER_LENGTH)
    header_end = int(length) if length else len(body)
    reply = orjson.loads(body[:header_end])
    offset = header_end
    for output in reply.get("outputs", []):
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == name:
            shape = output["shape"]
            if size is not None:
                return np.frombuffer(body[offset : offset + size], dtype="<f4").reshape(shape)
            return np.asarray(output["data"], dtype=np.float32).reshape(shape)
        offset += size or 0
    raise ValueError(f"the model's answer has no output {name!r}")
