"""Top-1 of a v2 infer response (JSON or binary tensor extension), for mirror agreement.

The first output is taken as the class scores: one row per batch element, argmax over the rest.
A 1-D output is one row (no batch dimension) unless it holds integers, which are labels already.
The body is read by the shared wire codec (services/common/v2wire.py).
"""

from __future__ import annotations

import numpy as np

from services.common.v2wire import bad, read_response


def top1(body: bytes, header_length: str | None) -> np.ndarray:
    """Top-1 class index per row; raises ProtocolError on a body that is not a v2 infer response."""
    outputs = read_response(body, header_length)
    if not outputs:
        raise bad("not a v2 infer response: no outputs")
    values = next(iter(outputs.values()))
    kind = values.dtype.kind
    if kind not in "biuf":
        raise bad(f"first output has datatype {values.dtype}, not numeric")
    if values.ndim <= 1:
        return values.astype(np.int64) if kind in "biu" else values.argmax(keepdims=True)
    return values.reshape(values.shape[0], -1).argmax(axis=1)


def agreement(primary: np.ndarray, mirror: np.ndarray) -> tuple[int, int]:
    """(rows that agree, rows that disagree); a shape mismatch disagrees on every primary row."""
    if primary.shape != mirror.shape:
        return 0, int(primary.size)
    same = int(np.count_nonzero(primary == mirror))
    return same, int(primary.size) - same
