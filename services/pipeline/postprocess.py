"""classification-postprocess: logits in; softmax and the top k classes with their labels out.

Input: raw FP32 bytes with `x-tensor-shape` (what the business API sends), or JSON {"logits": [...] or
[[...], ...]}. Output: {"predictions": [{"label", "index", "score", "top_k": [{"label", "index", "score"}]}]}
one per row. Labels come from models/<model>/labels.txt (line i = class i); without it, class numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.common.v2wire import OCTET, SHAPE_HEADER, read_raw
from services.pipeline.service import BadRequest, create_app, json_response

MAX_BODY_BYTES = 8 * 1024 * 1024


def load_labels(path: Path) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, C] logits, stable for large values."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int, labels: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """For each row, the k most probable classes (ties: the lower index first)."""
    k = min(k, probabilities.shape[1])
    predictions = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:k]
        ranked = [{"label": labels[i] if labels else str(i), "index": int(i), "score": float(row[i])} for i in order]
        predictions.append({**ranked[0], "top_k": ranked})
    return predictions


def as_logits(value: Any) -> np.ndarray:
    try:
        logits = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(400, "logits must be a rectangular array of numbers") from None
    if logits.ndim == 1:
        logits = logits[None]
    if logits.ndim != 2 or 0 in logits.shape:
        raise BadRequest(400, f"logits have shape {list(logits.shape)}: send [classes] or [batch][classes]")
    if not np.isfinite(logits).all():
        raise BadRequest(400, "logits must be finite numbers")
    return logits


def classify(logits: np.ndarray, k: int, labels: tuple[str, ...] | None) -> list[dict[str, Any]]:
    if labels is not None and logits.shape[1] != len(labels):
        raise BadRequest(400, f"logits have {logits.shape[1]} classes but labels.txt lists {len(labels)}")
    return top_k(softmax(logits), k, labels)


def build_app(service: str, k: int, labels: tuple[str, ...] | None):
    app = create_app(service)

    @app.post("/v1/postprocess")
    async def postprocess(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
        if request.headers.get("content-type", "").startswith(OCTET):
            logits = as_logits(read_raw(body, request.headers.get(SHAPE_HEADER)))
        else:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(400, f"body is not valid JSON: {exc}") from None
            if not isinstance(doc, dict) or "logits" not in doc:
                raise BadRequest(400, 'send JSON {"logits": [...]} or raw FP32 bytes with x-tensor-shape')
            logits = as_logits(doc["logits"])
        return json_response({"predictions": classify(logits, k, labels)})

    return app
