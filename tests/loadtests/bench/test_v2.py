"""Request bodies are what tritonclient sends, and decode back to the same tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from loadtests.bench.v2 import compact_json_body, request_body, write_bodies

ARRAY = np.random.default_rng(3).random((1, 1, 8, 8), dtype=np.float32)


def test_binary_body_is_header_then_raw_tensor() -> None:
    body, headers = request_body("input", ARRAY, "logits", "binary")
    size = int(headers["Inference-Header-Content-Length"])
    header = orjson.loads(body[:size])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == ARRAY.nbytes
    assert header["outputs"] == [{"name": "logits", "parameters": {"binary_data": True}}]
    np.testing.assert_array_equal(np.frombuffer(body[size:], np.float32).reshape(ARRAY.shape), ARRAY)


def test_json_bodies_carry_every_value() -> None:
    body, headers = request_body("input", ARRAY, "logits", "json")
    assert headers == {"Content-Type": "application/json"}
    for raw in (body, compact_json_body("input", ARRAY)):
        tensor = orjson.loads(raw)["inputs"][0]
        assert tensor["shape"] == [1, 1, 8, 8]
        np.testing.assert_array_equal(np.asarray(tensor["data"], np.float32).reshape(ARRAY.shape), ARRAY)
    assert len(compact_json_body("input", ARRAY)) < len(body)


def test_write_bodies_puts_both_encodings_on_disk(tmp_path: Path) -> None:
    bodies = write_bodies("input", ARRAY, "logits", tmp_path)
    assert set(bodies) == {"binary", "json"}
    for body in bodies.values():
        assert body.path.stat().st_size == body.size > ARRAY.nbytes
