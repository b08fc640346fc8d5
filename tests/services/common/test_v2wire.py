"""The v2 wire codec on its own, both sides: every datatype there and back, tensors at offsets, BYTES
prefixes, every malformed body with its exact 400 message, and byte-level interoperability with the
real tritonclient.http (what its InferInput writes we read; what we write its InferResult reads)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from services.common.datatypes import V2_TO_NUMPY
from services.common.errors import HTTPError, ProtocolError
from services.common.v2wire import (
    HEADER_LENGTH,
    SHAPE_HEADER,
    datatype_of,
    raw_headers,
    read_raw,
    read_response,
    read_tensor,
    split_body,
    strings_to_binary,
    write_request,
    write_response,
)

NUMERIC = sorted(name for name in V2_TO_NUMPY if name != "BYTES")


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Values that use the type's range: extremes for integers, a fraction and a negative for floats."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return np.array(["", "a", "é", "longer text", "x" * 300, "z"][:count], dtype=object).reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "b":
        return (np.arange(count) % 2 == 0).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [info.min, info.max, 0, 1, info.max - 1, info.min + 1][:count]
        return np.array(values, dtype=dtype).reshape(shape)
    return np.array([0.5, -1.25, 3.0, 0.0, -0.0, 100.0][:count], dtype=dtype).reshape(shape)


def read_inputs(body: bytes, headers: dict[str, str]) -> dict[str, np.ndarray]:
    """What a server does with a request body, with the shared pieces: split, then walk by offset."""
    header, tail = split_body(body, headers.get(HEADER_LENGTH))
    out, offset = {}, 0
    for entry in orjson.loads(header)["inputs"]:
        size = entry["parameters"]["binary_data_size"]
        flat = read_tensor(entry["name"], entry["datatype"], tail, offset, size, math.prod(entry["shape"]))
        out[entry["name"]] = flat.reshape(entry["shape"])
        offset += size
    assert offset == len(tail)
    return out


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, (a.dtype, a.shape, b.dtype, b.shape)
    if a.dtype == object:
        assert a.tolist() == b.tolist()
    else:
        assert a.tobytes() == b.tobytes()  # exact: -0.0 is not 0.0


# ------------------------------------------------------------------ round trips, every datatype


@pytest.mark.parametrize("datatype", sorted(V2_TO_NUMPY))
def test_request_round_trip_every_datatype(datatype: str) -> None:
    tensor = sample(datatype)
    body, headers = write_request({"x": tensor}, ["y"])
    assert headers["content-type"] == "application/octet-stream"
    same(read_inputs(body, headers)["x"], tensor)


@pytest.mark.parametrize("datatype", sorted(V2_TO_NUMPY))
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_response_round_trip_every_datatype(datatype: str, binary: bool) -> None:
    tensor = sample(datatype)
    body, length = write_response("m", "1", "r-1", [("y", datatype, tensor, binary)])
    assert (length is None) == (not binary)
    same(read_response(body, None if length is None else str(length))["y"], tensor)


def test_non_finite_floats_go_as_strings_in_json_and_read_back() -> None:
    y = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    body, length = write_response("m", "1", None, [("y", "FP32", y, False)])
    assert length is None and b"null" not in body
    assert orjson.loads(body)["outputs"][0]["data"] == ["NaN", "Infinity", "-Infinity", 1.5]
    np.testing.assert_array_equal(read_response(body, None)["y"], y)


def test_several_tensors_at_offsets_and_mixed_json_and_binary_outputs() -> None:
    a, s, b, c = sample("FP32"), sample("BYTES", (3,)), sample("INT64", (1, 2)), sample("UINT8", (2, 2))
    request, headers = write_request({"a": a, "s": s, "b": b, "c": c}, ["y"])
    decoded = read_inputs(request, headers)
    for name, tensor in {"a": a, "s": s, "b": b, "c": c}.items():
        same(decoded[name], tensor)

    outputs = [("a", "FP32", a, True), ("s", "BYTES", s, False), ("b", "INT64", b, True), ("c", "UINT8", c, False)]
    body, length = write_response("m", "2", None, outputs)
    doc = orjson.loads(body[:length])
    assert [o.get("parameters", {}).get("binary_data_size") for o in doc["outputs"]] == [24, None, 16, None]
    assert body[length:] == a.tobytes() + b.tobytes()
    read = read_response(body, str(length))
    assert list(read) == ["a", "s", "b", "c"]
    for name, _, tensor, _ in outputs:
        same(read[name], tensor)


def test_bytes_elements_carry_4_byte_little_endian_prefixes() -> None:
    assert strings_to_binary(np.array(["abc", b"\x00\xff", ""], dtype=object)) == (
        b"\x03\x00\x00\x00abc" + b"\x02\x00\x00\x00\x00\xff" + b"\x00\x00\x00\x00"
    )
    long = "é" * 200  # 400 UTF-8 bytes: the prefix counts bytes, not characters
    assert strings_to_binary(np.array([long], dtype=object))[:4] == (400).to_bytes(4, "little")
    tail = memoryview(strings_to_binary(np.array(["abc", long], dtype=object)))
    assert read_tensor("s", "BYTES", tail, 0, len(tail), 2).tolist() == ["abc", long]


def test_datatype_of_arrays() -> None:
    assert [datatype_of(sample(t)) for t in sorted(V2_TO_NUMPY)] == sorted(V2_TO_NUMPY)
    assert datatype_of(np.array(["a"])) == "BYTES" and datatype_of(np.zeros(1, ">f4")) == "FP32"
    with pytest.raises(ValueError, match="complex64 has no v2 datatype"):
        datatype_of(np.zeros(1, np.complex64))


def test_big_endian_input_goes_little_endian() -> None:
    tensor = np.arange(4, dtype=">i4")
    body, headers = write_request({"x": tensor})
    assert body[int(headers[HEADER_LENGTH]) :] == np.arange(4, dtype="<i4").tobytes()


# ------------------------------------------------------------------ malformed bodies: the exact 400


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "Inference-Header-Content-Length 'abc' is not an integer of at most 18 digits"),
        ("1" * 19, f"Inference-Header-Content-Length {'1' * 19!r} is not an integer of at most 18 digits"),
        ("", "Inference-Header-Content-Length '' is not an integer of at most 18 digits"),
        ("-1", "Inference-Header-Content-Length is -1 but the body has only 10 bytes"),
        ("11", "Inference-Header-Content-Length is 11 but the body has only 10 bytes"),
        ("9" * 18, f"Inference-Header-Content-Length is {'9' * 18} but the body has only 10 bytes"),
    ],
)
def test_split_body_refuses_a_bad_header_length(value: str, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        split_body(b"0123456789", value)
    assert (caught.value.status, caught.value.message) == (400, message)
    assert isinstance(caught.value, HTTPError)


def test_split_body_at_the_edges() -> None:
    header, tail = split_body(b"{}xyz", "2")
    assert (bytes(header), bytes(tail)) == (b"{}", b"xyz")
    header, tail = split_body(b"{}", "2")
    assert (bytes(header), bytes(tail)) == (b"{}", b"")
    assert split_body(b"{}", None) == (b"{}", b"")


TAIL = memoryview(np.arange(4, dtype="<f4").tobytes())  # 16 bytes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("FP32", 0, 20, 5), "input 'x': binary_data_size 20 runs past the end of the body (16 binary bytes left)"),
        (("FP32", 8, 12, 3), "input 'x': binary_data_size 12 runs past the end of the body (8 binary bytes left)"),
        (("FP32", 0, 12, 4), "input 'x': binary_data_size is 12 bytes, 4 FP32 elements need 16"),
        (("FP64", 0, 16, 4), "input 'x': binary_data_size is 16 bytes, 4 FP64 elements need 32"),
        (("FP32", 0, -4, 1), "input 'x': binary_data_size must be a non-negative integer"),
        (("FP32", 0, 4.0, 1), "input 'x': binary_data_size must be a non-negative integer"),
        (("FP32", 0, True, 1), "input 'x': binary_data_size must be a non-negative integer"),
    ],
)
def test_read_tensor_refuses_sizes_that_do_not_fit(args: tuple, message: str) -> None:
    datatype, offset, size, count = args
    with pytest.raises(ProtocolError) as caught:
        read_tensor("x", datatype, TAIL, offset, size, count)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_read_tensor_names_the_output_and_the_grpc_field() -> None:
    with pytest.raises(ProtocolError, match=r"^output 'y': binary_data_size is 16 bytes, 3 FP32"):
        read_tensor("y", "FP32", TAIL, 0, 16, 3, "output")
    with pytest.raises(ProtocolError, match=r"^input 'x': raw_input_contents has 16 bytes, 3 FP32 elements need 12$"):
        read_tensor("x", "FP32", TAIL, 0, 16, 3, size_field="raw_input_contents has")


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x03\x00\x00\x00ab", 1, "input 's': BYTES element of 3 bytes runs past the tensor's data"),
        (b"\x01\x00\x00\x00a\x01\x00", 2, "input 's': truncated BYTES length prefix at byte 5"),
        (b"\x01\x00\x00\x00a", 2, "input 's': binary data has 1 BYTES elements, the shape needs 2"),
        (b"\x01\x00\x00\x00\xff", 1, "input 's': BYTES element 0 is not UTF-8 (ONNX strings are)"),
    ],
)
def test_read_tensor_refuses_broken_bytes(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        read_tensor("s", "BYTES", memoryview(raw), 0, len(raw), count)
    assert (caught.value.status, caught.value.message) == (400, message)


def _reply(outputs: list[dict], tail: bytes = b"") -> tuple[bytes, str]:
    header = orjson.dumps({"outputs": outputs})
    return header + tail, str(len(header))


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b'{"error": "boom"}', None, """not a v2 infer response: no 'outputs' list in '{"error": "boom"}'"""),
        (b"[1]", None, "not a v2 infer response: no 'outputs' list in '[1]'"),
        (
            *_reply([{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}], b"1234"),
            "output 'y': binary_data_size 8 runs past the end of the body (4 binary bytes left)",
        ),
        (
            *_reply([{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}], b"1234"),
            "output 'y': binary_data_size is 4 bytes, 2 FP32 elements need 8",
        ),
        (
            *_reply([{"name": "y", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}], b"12345"),
            "the body has 1 binary bytes that no output's binary_data_size claims",
        ),
        (
            *_reply([{"name": "y", "datatype": "FP32", "shape": [3], "data": [1, 2]}]),
            "output 'y': data has 2 elements, the shape needs 3",
        ),
        (
            *_reply([{"name": "y", "datatype": "FLOAT", "shape": [1], "data": [1]}]),
            "output 'y': unknown datatype 'FLOAT'",
        ),
        (
            *_reply([{"name": "y", "datatype": "FP32", "shape": [-1], "data": [1]}]),
            "output 'y': shape must be a list of non-negative integers",
        ),
        (
            *_reply([{"name": "y", "datatype": "FP32", "shape": [1]}]),
            "output 'y' has neither 'data' nor parameters.binary_data_size",
        ),
        (
            *_reply([{"datatype": "FP32", "shape": [1], "data": [1]}]),
            "each output must be an object with a string 'name'",
        ),
        (
            *_reply([{"name": "y", "datatype": "INT8", "shape": [1], "data": [{"a": 1}]}]),
            "output 'y': data is not a INT8 tensor (",
        ),
    ],
)
def test_read_response_refuses_what_is_not_a_v2_reply(body: bytes, length: str | None, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        read_response(body, length)
    assert caught.value.status == 400
    assert caught.value.message == message or (message.endswith("(") and caught.value.message.startswith(message))


def test_read_response_refuses_a_bad_header_length_and_bad_json() -> None:
    with pytest.raises(ProtocolError, match=r"^Inference-Header-Content-Length 'x' is not an integer"):
        read_response(b"{}", "x")
    with pytest.raises(ProtocolError, match=r"^malformed JSON in the response header: "):
        read_response(b'{"outputs": [', None)


# ------------------------------------------------------------------ the raw frame between pipeline stages


def test_raw_frame_round_trip_and_its_refusals() -> None:
    tensor = np.arange(20, dtype=np.float32).reshape(2, 10)
    headers = raw_headers(tensor.shape)
    assert headers == {
        "content-type": "application/octet-stream",
        "x-tensor-shape": "2,10",
        "x-tensor-datatype": "FP32",
    }
    np.testing.assert_array_equal(read_raw(tensor.tobytes(), headers[SHAPE_HEADER]), tensor)
    cases = [
        ("3,10", "80 bytes do not hold an FP32 tensor of shape [3, 10] (120 bytes)"),
        (None, "a binary tensor needs the x-tensor-shape header, e.g. '1,10'"),
        ("2;10", "x-tensor-shape '2;10' is not a comma-separated list of sizes"),
        ("2,-10", "x-tensor-shape '2,-10' is not a shape"),
    ]
    for shape_text, message in cases:
        with pytest.raises(ProtocolError) as caught:
            read_raw(tensor.tobytes(), shape_text)
        assert (caught.value.status, caught.value.message) == (400, message)


# ------------------------------------------------------------------ interoperability with tritonclient.http


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_write_request_writes_what_tritonclient_writes(binary: bool) -> None:
    a, s = sample("FP32", (1, 3)), sample("BYTES", (2,))
    body, headers = write_request({"a": a, "s": s}, ["y", "z"], binary=binary, binary_outputs=binary)
    inputs = []
    for name, tensor, datatype in (("a", a, "FP32"), ("s", s, "BYTES")):
        infer_input = triton.InferInput(name, list(tensor.shape), datatype)
        infer_input.set_data_from_numpy(tensor, binary_data=binary)
        inputs.append(infer_input)
    wanted = [triton.InferRequestedOutput(o, binary_data=binary) for o in ("y", "z")]
    reference, length = triton.InferenceServerClient.generate_request_body(inputs, outputs=wanted)
    if binary:
        assert int(headers[HEADER_LENGTH]) == length
        assert orjson.loads(body[:length]) == orjson.loads(reference[:length])
        assert body[length:] == reference[length:]
    else:
        assert length is None and HEADER_LENGTH not in headers and headers["content-type"] == "application/json"
        ours, theirs = orjson.loads(body), orjson.loads(reference)
        assert ours["outputs"] == theirs["outputs"]
        assert np.array_equal(np.float32(ours["inputs"][0]["data"]), np.float32(theirs["inputs"][0]["data"]))
        assert ours["inputs"][1] == theirs["inputs"][1]


def test_no_outputs_named_asks_for_binary_outputs_as_tritonclient_does() -> None:
    tensor = sample("INT32")
    body, headers = write_request({"x": tensor})
    assert headers["content-type"] == "application/octet-stream"
    infer_input = triton.InferInput("x", list(tensor.shape), "INT32")
    infer_input.set_data_from_numpy(tensor, binary_data=True)
    reference, length = triton.InferenceServerClient.generate_request_body([infer_input])
    assert orjson.loads(body[:length]) == orjson.loads(reference[:length])
    assert orjson.loads(body[:length])["parameters"] == {"binary_data_output": True}


@pytest.mark.parametrize("datatype", sorted(V2_TO_NUMPY))
def test_tritonclient_request_bodies_read_back(datatype: str) -> None:
    """Every datatype as tritonclient's InferInput writes it (two inputs, so the second sits at an offset)."""
    first, second = sample(datatype), sample("FP16", (3,))
    inputs = []
    for name, tensor, kind in (("a", first, datatype), ("b", second, "FP16")):
        infer_input = triton.InferInput(name, list(tensor.shape), kind)
        infer_input.set_data_from_numpy(tensor, binary_data=True)
        inputs.append(infer_input)
    body, length = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=[triton.InferRequestedOutput("y", binary_data=True)]
    )
    decoded = read_inputs(body, {HEADER_LENGTH: str(length)})
    same(decoded["a"], first)  # BYTES too: read back as str, as given
    same(decoded["b"], second)


@pytest.mark.parametrize("datatype", sorted(V2_TO_NUMPY))
def test_tritonclient_reads_what_write_response_writes(datatype: str) -> None:
    tensor, other = sample(datatype), sample("FP64", (2,))
    outputs = [("y", datatype, tensor, True), ("j", "FP64", other, False), ("z", "FP64", other, True)]
    body, length = write_response("m", "3", "req-7", outputs)
    result = triton.InferenceServerClient.parse_response_body(body, header_length=length)
    assert result.get_response()["model_name"] == "m" and result.get_response()["id"] == "req-7"
    got = result.as_numpy("y")
    if datatype == "BYTES":  # tritonclient gives BYTES back as bytes
        assert [x.decode() for x in got.reshape(-1)] == tensor.reshape(-1).tolist() and got.shape == tensor.shape
    else:
        same(got, tensor)
    same(result.as_numpy("j"), other)
    same(result.as_numpy("z"), other)
