"""The infer-body codec on its own: the large-body JSON path (simdjson) decides exactly as orjson's."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import ProtocolError
from services.common.v2wire import write_response
from services.modelserver import jsonload
from services.modelserver.codec import decode_request
from services.modelserver.signature import Signature, TensorSig
from tests.services.modelserver.onnx_models import DATATYPES


def signature(datatype: str) -> Signature:
    """A model with the one input IN_<datatype> [-1, 3]."""
    tensor = TensorSig(f"IN_{datatype}", datatype, (-1, 3))
    return Signature(inputs={tensor.name: tensor}, outputs={tensor.name: tensor}, max_batch_size=4)


def decode(datatype: str, body: bytes, large: bool) -> object:
    """Outcome of one path: the decoded arrays, or the error status."""
    saved = jsonload.LARGE
    jsonload.LARGE = 0 if large else 1 << 60
    try:
        request = decode_request(body, memoryview(b""), signature(datatype))
    except ProtocolError as exc:
        return exc.status
    finally:
        jsonload.LARGE = saved
    return {  # bytes: exact, and -0.0 differs from 0.0
        n: (a.dtype, a.shape, a.tolist() if a.dtype == object else a.tobytes()) for n, a in request.inputs.items()
    }


def requests(draw_data: st.SearchStrategy) -> st.SearchStrategy:
    def one(datatype: str, rows: int, data: object) -> tuple[str, bytes]:
        return datatype, json.dumps(
            {"inputs": [{"name": f"IN_{datatype}", "datatype": datatype, "shape": [rows, 3], "data": data}]}
        ).encode()

    return st.builds(one, st.sampled_from(sorted(DATATYPES)), st.integers(1, 2), draw_data)


_scalars = (
    st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.text(max_size=3)
)
_data = (
    st.lists(_scalars, min_size=3, max_size=6)
    | st.lists(st.lists(_scalars, min_size=1, max_size=3), min_size=1, max_size=3)
    | st.lists(st.integers(-300, 300), min_size=3, max_size=6)
    | st.lists(st.floats(width=32, allow_nan=False), min_size=6, max_size=6)
)


@settings(max_examples=300, deadline=None)
@given(case=requests(_data))
def test_large_body_path_decides_like_orjson(case: tuple[str, bytes]) -> None:
    datatype, body = case
    assert decode(datatype, body, True) == decode(datatype, body, False)


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "FP64", "INT8", "INT64", "UINT64", "UINT32"])
def test_large_numeric_tensor_exact(datatype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dtype = np.dtype(DATATYPES[datatype][1])
    rng = np.random.default_rng(0)
    if dtype.kind == "f":
        x = rng.standard_normal((4, 3)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x = np.array([[info.min, info.max, 0]] * 4, dtype=dtype)
    body = orjson.dumps(
        {"inputs": [{"name": f"IN_{datatype}", "datatype": datatype, "shape": [4, 3], "data": x.reshape(-1).tolist()}]}
    )
    monkeypatch.setattr(jsonload, "LARGE", 0)
    got = decode_request(body, memoryview(b""), signature(datatype)).inputs[f"IN_{datatype}"]
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, x)


def test_large_malformed_json_is_400(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonload, "LARGE", 0)
    for body in (b'{"inputs": [', b"[1, NaN]", b'{"inputs": [{"data": [1e999]}]}', b"\xff\xfe"):
        with pytest.raises(ProtocolError) as err:
            decode_request(body, memoryview(b""), signature("FP32"))
        assert err.value.status == 400


def test_response_encoding_binary_and_json() -> None:
    y = np.arange(6, dtype=np.float16).reshape(2, 3)
    s = np.array([["a", "bé"]], dtype=object)
    body, json_length = write_response("m", "1", "id-1", [("y", "FP16", y, True), ("s", "BYTES", s, False)])
    header = orjson.loads(body[:json_length])
    assert header["id"] == "id-1" and header["model_version"] == "1"
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 12
    np.testing.assert_array_equal(np.frombuffer(body[json_length:], np.float16).reshape(2, 3), y)
    assert header["outputs"][1]["data"] == ["a", "bé"] and header["outputs"][1]["shape"] == [1, 2]


def test_json_outputs_spell_non_finite_values() -> None:
    y = np.array([[np.nan, 1.5, np.inf, -np.inf]], np.float32)
    s = np.array([["null"]], dtype=object)  # "null" in the text must not be taken for a NaN
    body, json_length = write_response("m", "1", "null", [("y", "FP32", y, False), ("s", "BYTES", s, False)])
    assert json_length is None
    doc = orjson.loads(body)
    assert doc["outputs"][0]["data"] == ["NaN", 1.5, "Infinity", "-Infinity"]
    assert doc["outputs"][1]["data"] == ["null"] and doc["id"] == "null"
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], dtype=np.float32), y.reshape(-1))
    finite, _ = write_response("m", "1", "null", [("y", "FP32", np.ones((1, 2), np.float32), False)])
    assert orjson.loads(finite)["outputs"][0]["data"] == [1.0, 1.0]
