"""The wire formats between hops: raw FP32 + shape header, and v2 binary infer bodies as tritonclient sends them."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from services.pipeline.service import BadRequest
from services.pipeline.tensors import from_raw, v2_infer_request, v2_output


def test_raw_round_trip_and_size_check() -> None:
    tensor = np.arange(20, dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(from_raw(tensor.tobytes(), "2,10"), tensor)
    with pytest.raises(BadRequest, match="80 bytes do not hold an FP32 tensor of shape \\[3, 10\\]"):
        from_raw(tensor.tobytes(), "3,10")


def test_infer_request_matches_tritonclient() -> None:
    tensor = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    body, headers = v2_infer_request("input", tensor, ["logits"])
    infer_input = triton.InferInput("input", [1, 1, 8, 8], "FP32")
    infer_input.set_data_from_numpy(tensor, binary_data=True)
    output = triton.InferRequestedOutput("logits", binary_data=True)
    reference, length = triton.InferenceServerClient.generate_request_body([infer_input], outputs=[output])
    assert int(headers["inference-header-content-length"]) == length
    assert orjson.loads(body[:length]) == orjson.loads(reference[:length])
    assert body[length:] == reference[length:] == tensor.tobytes()


def test_output_binary_and_json() -> None:
    logits = np.arange(10, dtype=np.float32).reshape(1, 10)
    other = np.ones((1, 2), dtype=np.float32)
    header = orjson.dumps(
        {
            "outputs": [
                {"name": "other", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
                {"name": "logits", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}},
            ]
        }
    )
    body = header + other.tobytes() + logits.tobytes()
    np.testing.assert_array_equal(
        v2_output(body, {"inference-header-content-length": str(len(header))}, "logits"), logits
    )
    plain = orjson.dumps(
        {"outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": list(range(10))}]}
    )
    np.testing.assert_array_equal(v2_output(plain, {}, "logits"), logits)
    with pytest.raises(ValueError, match="no output 'probs'"):
        v2_output(plain, {}, "probs")
