"""Top-1 of a v2 infer response (JSON or binary tensor extension), for mirror agreement.

The first output is taken as the class scores: one row per batch element, argmax over the rest.
A 1-D output is one row (no batch dimension) unless it holds integers, which are labels already.
"""

from __future__ import annotations

import numpy as np
import orjson

from services.common.datatypes import V2_TO_NUMPY


def top1(body: bytes, header_length: str | None) -> np.ndarray:
    """Top-1 class index per row; raises ValueError on a body that is not a v2 infer response."""
    if header_length is not None:
        n = int(header_length)
        head, tail = orjson.loads(body[:n]), memoryview(body)[n:]
    else:
        head, tail = orjson.loads(body), memoryview(b"")
    try:
        output = head["outputs"][0]
        datatype, shape = output["datatype"], [int(d) for d in output["shape"]]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"not a v2 infer response: {exc!r}") from None
    dtype = V2_TO_NUMPY.get(datatype)
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"first output has datatype {datatype!r}, not numeric")
    size = (output.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        values = np.frombuffer(tail[: int(size)], dtype=dtype)
    else:
        values = np.asarray(output["data"], dtype=dtype).ravel()
    if len(shape) <= 1:
        return values.astype(np.int64) if dtype.kind in "biu" else values.argmax(keepdims=True)
    rows = shape[0]
    return values.reshape(rows, -1).argmax(axis=1)


def agreement(primary: np.ndarray, mirror: np.ndarray) -> tuple[int, int]:
    """(rows that agree, rows that disagree); a shape mismatch disagrees on every primary row."""
    if primary.shape != mirror.shape:
        return 0, int(primary.size)
    same = int(np.count_nonzero(primary == mirror))
    return same, int(primary.size) - same
