"""Bad input gets a 4xx with a message saying what was wrong, never a 500 or a hang, and the server
keeps serving everyone else. A table of known cases, then a hypothesis fuzz run against the live server."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.services.modelserver.conftest import MAX_BODY
from tests.services.modelserver.serverproc import Server

INFER = "/v2/models/affine/infer"
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def tensor(**overrides: object) -> bytes:
    spec = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4], **overrides}
    return orjson.dumps({"inputs": [spec]})


def binary(header: dict, payload: bytes, claimed: int | None = None) -> tuple[bytes, dict]:
    head = orjson.dumps(header)
    return head + payload, {"Inference-Header-Content-Length": str(len(head) if claimed is None else claimed)}


_BIN_HEADER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}


def strings(payload: bytes) -> tuple[bytes, dict]:
    size = {"binary_data_size": len(payload)}
    return binary({"inputs": [{"name": "IN_BYTES", "datatype": "BYTES", "shape": [1, 3], "parameters": size}]}, payload)


CASES = [
    # (id, path, body, headers, status, message substring)
    ("malformed-json", INFER, b'{"inputs": [', {}, 400, "malformed JSON"),
    ("not-an-object", INFER, b"[1, 2]", {}, 400, "JSON object"),
    ("no-inputs", INFER, b"{}", {}, 400, "'inputs'"),
    ("unknown-model", "/v2/models/nope/infer", tensor(), {}, 404, "unknown model 'nope'"),
    ("unknown-version", "/v2/models/affine/versions/9/infer", tensor(), {}, 404, "no ready version '9'"),
    ("bad-version", "/v2/models/affine/versions/x/infer", tensor(), {}, 404, "version 'x'"),
    ("non-ascii-digit-version", "/v2/models/affine/versions/\u00b2/infer", tensor(), {}, 404,
     "unknown version '\u00b2' of model 'affine'"),
    ("bad-path", "/v2/models/affine/extra/infer", tensor(), {}, 404, "no such endpoint"),
    ("wrong-name", INFER, tensor(name="z"), {}, 400, "unknown input 'z'"),
    ("wrong-datatype", INFER, tensor(datatype="FP64"), {}, 400, "'x': datatype 'FP64' does not match"),
    ("unknown-datatype", INFER, tensor(datatype="FLOAT"), {}, 400, "datatype 'FLOAT'"),
    ("wrong-shape", INFER, tensor(shape=[1, 5], data=[1] * 5), {}, 400, "'x': shape [1, 5] does not match"),
    ("wrong-rank", INFER, tensor(shape=[4], data=[1] * 4), {}, 400, "'x': shape [4]"),
    ("negative-dim", INFER, tensor(shape=[-1, 4]), {}, 400, "non-negative integers"),
    ("batch-too-big", INFER, tensor(shape=[9, 4], data=[0] * 36), {}, 400, "batch size 9 is outside [1, 8]"),
    ("too-few-elements", INFER, tensor(data=[1, 2, 3]), {}, 400, "'x': data has 3 elements, the shape needs 4"),
    ("too-many-elements", INFER, tensor(data=[1] * 5), {}, 400, "data has 5 elements"),
    ("ragged-data", INFER, tensor(data=[[1, 2], [3]]), {}, 400, "'x': data is not a FP32 tensor"),
    ("string-in-floats", INFER, tensor(data=["a", 2, 3, 4]), {}, 400, "'x': FP32 data must be numbers, got strings"),
    ("numeric-string-in-floats", INFER, tensor(data=["4", 2, 3, 4]), {}, 400, "FP32 data must be numbers, got strings"),
    ("bool-in-floats", INFER, tensor(data=[1.5, True, 3, 4]), {}, 400, "'x': FP32 data must be numbers, got booleans"),
    ("bools-for-floats", INFER, tensor(data=[True, False, True, True]), {}, 400, "must be numbers, got booleans"),
    ("null-in-floats", INFER, tensor(data=[None, 2, 3, 4]), {}, 400, "'x': FP32 data must be numbers, got nulls"),
    ("nested-null-in-floats", INFER, tensor(shape=[2, 4], data=[[1, 2, 3, None], [1, 2, 3, 4]]), {}, 400, "got nulls"),
    ("data-not-list", INFER, tensor(data={"a": 1}), {}, 400, "'data' must be a list"),
    ("no-data", INFER, orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]}), {}, 400,
     "neither 'data' nor"),
    ("duplicate-input", INFER, orjson.dumps({"inputs": [orjson.loads(tensor())["inputs"][0]] * 2}), {}, 400,
     "given twice"),
    ("duplicate-output", INFER, orjson.dumps({**GOOD, "outputs": [{"name": "y"}, {"name": "relu"}, {"name": "y"}]}),
     {}, 400, "output 'y' is requested twice"),
    ("binary-data-not-bool", INFER,
     orjson.dumps({**GOOD, "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}), {}, 400,
     "output 'y': parameter 'binary_data' must be true or false, got str"),
    ("binary-data-output-not-bool", INFER, orjson.dumps({**GOOD, "parameters": {"binary_data_output": 1}}), {}, 400,
     "parameter 'binary_data_output' must be true or false, got int"),
    ("unknown-output", INFER, orjson.dumps({**GOOD, "outputs": [{"name": "nope"}]}), {}, 400, "unknown output 'nope'"),
    ("bad-timeout", INFER, orjson.dumps({**GOOD, "parameters": {"timeout": "soon"}}), {}, 400, "'timeout'"),
    ("bad-id", INFER, orjson.dumps({**GOOD, "id": 5}), {}, 400, "'id' must be a string"),
    ("int-out-of-range", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_INT8", "datatype": "INT8", "shape": [1, 3], "data": [1, 2, 300]}]}), {},
     400, "out of range for INT8"),
    ("float-overflow", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_FP16", "datatype": "FP16", "shape": [1, 3], "data": [1, 2, 70000.0]}]}), {},
     400, "out of range for FP16"),
    ("float-for-int", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_INT32", "datatype": "INT32", "shape": [1, 3], "data": [1.5, 2, 3]}]}), {},
     400, "INT32 data must be integers"),
    ("bool-in-ints", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_INT32", "datatype": "INT32", "shape": [1, 3], "data": [True, 2, 3]}]}), {},
     400, "'IN_INT32': INT32 data must be integers, got booleans"),
    ("string-in-ints", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_INT64", "datatype": "INT64", "shape": [1, 3], "data": ["1", 2, 3]}]}), {},
     400, "INT64 data must be integers, got strings"),
    ("whole-float-for-int", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_UINT8", "datatype": "UINT8", "shape": [1, 3], "data": [1.0, 2, 3]}]}), {},
     400, "UINT8 data must be integers"),
    ("null-in-bool", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_BOOL", "datatype": "BOOL", "shape": [1, 3], "data": [True, None, False]}]}),
     {}, 400, "BOOL data must be true/false"),
    ("int-for-bool", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_BOOL", "datatype": "BOOL", "shape": [1, 3], "data": [1, 0, 1]}]}), {},
     400, "BOOL data must be true/false"),
    ("number-for-bytes", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_BYTES", "datatype": "BYTES", "shape": [1, 3], "data": [1, 2, 3]}]}), {},
     400, "BYTES data must be strings"),
    ("missing-input", "/v2/models/ident/infer",
     orjson.dumps({"inputs": [{"name": "IN_BOOL", "datatype": "BOOL", "shape": [1, 3], "data": [True] * 3}]}), {},
     400, "missing inputs"),
    ("binary-header-longer-than-body", INFER, *binary(_BIN_HEADER, b"\0" * 16, claimed=10_000), 400,
     "Inference-Header-Content-Length is 10000 but the body has only"),
    ("binary-header-not-int", INFER, tensor(), {"Inference-Header-Content-Length": "ten"}, 400, "not an integer"),
    ("binary-size-past-end", INFER, *binary(_BIN_HEADER, b"\0" * 8), 400, "runs past the end of the body"),
    ("binary-size-wrong", INFER,
     *binary({"inputs": [{**_BIN_HEADER["inputs"][0], "parameters": {"binary_data_size": 8}}]}, b"\0" * 8), 400,
     "'x': binary_data_size is 8 bytes, 4 FP32 elements need 16"),
    ("binary-trailing-bytes", INFER, *binary(_BIN_HEADER, b"\0" * 20), 400, "4 binary bytes that no input"),
    ("binary-header-cuts-json", INFER, *binary(_BIN_HEADER, b"\0" * 16, claimed=5), 400, "malformed JSON"),
    ("bytes-truncated-prefix", "/v2/models/ident/infer", *strings(struct.pack("<I", 1) + b"a" + b"\0\0"),
     400, "truncated BYTES length prefix"),
    ("bytes-element-overruns", "/v2/models/ident/infer", *strings(struct.pack("<I", 50) + b"abcde"), 400,
     "runs past the tensor's data"),
    ("bytes-not-utf8", "/v2/models/ident/infer",
     *strings(struct.pack("<I", 1) + b"\xff" + struct.pack("<I", 0) * 2), 400, "BYTES element 0 is not UTF-8"),
    ("body-over-limit", INFER, b"[" + b"1," * MAX_BODY + b"1]", {}, 413, "over the limit"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_4xx(
    server: Server, path: str, body: bytes, headers: dict, status: int, message: str
) -> None:
    response = server.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_streamed_body_over_limit_is_413(server: Server) -> None:
    def chunks():  # no Content-Length: chunked transfer, so only the streaming check can catch it
        for _ in range(MAX_BODY // 10_000 + 2):
            yield b" " * 10_000

    response = server.post(INFER, content=chunks())
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["error"]


def test_other_endpoints_answer_errors_as_json(server: Server) -> None:
    assert server.get("/v2/models/nope").status_code == 404
    assert "unknown model" in server.get("/v2/models/nope/ready").json()["error"]
    assert server.post("/v2/repository/models/nope/unload").status_code == 404
    response = server.post("/v2/repository/index", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "error" in response.json()
    assert server.get("/v2/nothing/here").json() == {"error": "Not Found"}


def test_empty_outputs_list_means_all_outputs(server: Server) -> None:
    everything = server.post(INFER, json=GOOD)
    response = server.post(INFER, json={**GOOD, "outputs": []})
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == [o["name"] for o in everything.json()["outputs"]]
    assert response.json()["outputs"] == everything.json()["outputs"]


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A1", "%EF%BC%91"])  # superscript two, Arabic-Indic, fullwidth one
def test_non_ascii_digit_versions_are_unknown(server: Server, version: str) -> None:
    base = f"/v2/models/affine/versions/{version}"
    for response in (server.get(base), server.get(base + "/ready"), server.post(base + "/infer", json=GOOD)):
        assert response.status_code == 404, response.text
        assert "unknown version" in response.json()["error"]


def _chunks(total: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked): only a streaming check can stop it."""
    for _ in range(total // 10_000 + 1):
        yield b" " * 10_000


@pytest.mark.parametrize("path", ["/v2/repository/index", "/v2/repository/models/affine/load"])
def test_fastapi_routes_honour_the_body_limit(server: Server, path: str) -> None:
    response = server.post(path, content=_chunks(MAX_BODY + 20_000))
    assert response.status_code == 413, response.text
    assert "larger than the limit" in response.json()["error"]
    declared = server.post(path, content=b" " * (MAX_BODY + 1))  # Content-Length: refused before reading
    assert declared.status_code == 413
    assert "over the limit" in declared.json()["error"]
    assert server.post(path, content=b" " * 1000).status_code == 200, "a small body still goes through"


def test_repository_index_reads_bodies_without_content_type(server: Server) -> None:
    everything = server.post("/v2/repository/index").json()
    ready_only = server.post("/v2/repository/index", content=b'{"ready": true}')  # no Content-Type, as tritonclient
    assert ready_only.status_code == 200
    assert ready_only.json() == [row for row in everything if row["state"] == "READY"]
    for body, message in (
        (b"{not json", "index request body is not valid JSON"),
        (b"[1]", "must be a JSON object, got list"),
        (b'{"ready": "yes"}', "'ready' must be true or false, got str"),
    ):
        response = server.post("/v2/repository/index", content=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert message in error and "\n" not in error


# ------------------------------------------------------------ fuzz


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # the stdlib writes NaN and ints beyond 64 bits: more to reject


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
_names = st.sampled_from(["x", "IN_FP16", "IN_BYTES", "IN_UINT64", "IN_BOOL", "", "y"])
_datatypes = st.sampled_from(["FP32", "FP16", "BYTES", "UINT64", "BOOL", "INT8", "fp32", "X"])
_shapes = st.lists(st.integers(-2, 10), max_size=4) | _json
_tensor = st.fixed_dictionaries(
    {"name": _names, "datatype": _datatypes, "shape": _shapes},
    optional={"data": _json, "parameters": st.dictionaries(st.sampled_from(["binary_data_size"]), _json)},
)
_request = st.fixed_dictionaries(
    {"inputs": st.lists(_tensor, max_size=3) | _json},
    optional={"outputs": _json, "parameters": _json, "id": _json},
)
_bodies = _request.map(_dumps) | _json.map(_dumps) | st.binary(max_size=200)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=10) as client:
        yield client


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
_digits = st.text(st.characters(whitelist_categories=("Nd", "No")), min_size=1, max_size=3)  # any script
_odd = st.sampled_from(["\u00b2", "1\u00b2", "01", "0", "-1", "1.0", " 1", "..", "%", "a/b"])


def _model_path(model: str, version: str | None) -> str:
    """/v2/models/{model}[/versions/{version}], each segment percent-encoded whatever it holds."""
    base = f"/v2/models/{quote(model, safe='')}"
    return base if version is None else f"{base}/versions/{quote(version, safe='')}"


_model_paths = st.builds(
    _model_path, st.sampled_from(["affine", "ident", "nope"]) | _text, st.none() | st.just("1") | _digits | _odd | _text
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=_bodies,
    tail=st.binary(max_size=64),
    header_length=st.none() | st.integers(-5, 400).map(str) | st.text(max_size=4),
    model_path=_model_paths,
)
def test_fuzzed_requests_never_get_5xx(
    http: httpx.Client, body: bytes, tail: bytes, header_length: str | None, model_path: str
) -> None:
    headers = {}
    if (
        header_length is not None
        and header_length.isascii()
        and header_length.isprintable()
        and header_length.strip() == header_length
    ):
        headers["Inference-Header-Content-Length"] = header_length
    ready = http.get(model_path + "/ready")  # metadata and readiness parse the same path segments
    if ready.status_code == 503:  # a known model whose version is not serving: the one 5xx that is an answer
        assert ready.json()["ready"] is False, ready.text
    for response in (http.post(model_path + "/infer", content=body + tail, headers=headers), http.get(model_path)):
        assert response.status_code < 500, response.text
        if response.status_code != 200:
            assert isinstance(response.json()["error"], str)
    assert ready.status_code in (200, 404, 503), ready.text
    if ready.status_code == 404:
        assert isinstance(ready.json()["error"], str)


def test_server_still_serves_after_the_abuse(server: Server) -> None:
    assert server.get("/v2/health/live").status_code == 200
    response = server.post(INFER, json=GOOD)
    assert response.status_code == 200
    assert np.asarray(response.json()["outputs"][0]["data"]).shape == (3,)
