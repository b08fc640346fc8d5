"""The Open Inference Protocol surface, driven with tritonclient.http against a real server process."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.services.modelserver.conftest import Repo
from tests.services.modelserver.onnx_models import DATATYPES
from tests.services.modelserver.serverproc import Server


@pytest.fixture
def client(server: Server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def affine_input(x: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: httpclient.InferenceServerClient, server: Server) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "meshserve"
    assert {"model_repository", "binary_tensor_data"} <= set(meta["extensions"])
    assert server.get("/openapi.json").status_code == 200


def test_model_metadata_matches_the_graph(client: httpclient.InferenceServerClient, repo: Repo) -> None:
    sess = __import__("onnxruntime").InferenceSession(repo.models[("affine", 2)], providers=["CPUExecutionProvider"])
    meta = client.get_model_metadata("affine")
    assert meta["name"] == "affine"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        (i.name, "FP32", [-1, *i.shape[1:]]) for i in sess.get_inputs()
    ]
    assert [o["name"] for o in meta["outputs"]] == [o.name for o in sess.get_outputs()]
    assert meta["parameters"]["owner"] == "tests"
    assert client.get_model_metadata("affine", "1")["versions"] == ["1"]
    assert client.is_model_ready("affine") and client.is_model_ready("affine", "1")
    assert not client.is_model_ready("affine", "7")
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["1", "2", ""], ids=["v1", "v2", "newest"])
def test_infer_equals_onnxruntime(
    client: httpclient.InferenceServerClient, repo: Repo, binary: bool, version: str
) -> None:
    x = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    result = client.infer("affine", [affine_input(x, binary)], model_version=version, request_id="req-42")
    answered = int(version or 2)
    expected = repo.reference("affine", answered, {"x": x})
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_version"] == str(answered)
    for name in ("y", "relu"):
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    # the two versions really differ, so routing is visible
    other = repo.reference("affine", 3 - answered, {"x": x})
    assert not np.array_equal(other["y"], expected["y"])


def test_requested_outputs_and_version_header(server: Server, repo: Repo) -> None:
    x = np.ones((2, 4), np.float32)
    client = httpclient.InferenceServerClient(server.url)
    result = client.infer(
        "affine", [affine_input(x, True)], outputs=[httpclient.InferRequestedOutput("relu", binary_data=False)]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["relu"]
    assert result.as_numpy("y") is None
    np.testing.assert_array_equal(result.as_numpy("relu"), repo.reference("affine", 2, {"x": x})["relu"])
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    response = server.post("/v2/models/affine/versions/1/infer", json=body)
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "1"
    assert response.headers["content-type"] == "application/json"
    assert "id" not in response.json()


def _typed(datatype: str, rng: np.random.Generator) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([["a", "", "été"], ["\x00zero", "long" * 50, "x"]], dtype=object)
    if datatype == "BOOL":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    dtype = np.dtype(DATATYPES[datatype][1])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max, 0], [1, 2, info.max - 1]], dtype=dtype)
    return np.array([[0.5, -1.25, 3.0], [np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0]], dtype=dtype)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_round_trips(client: httpclient.InferenceServerClient, binary: bool) -> None:
    rng = np.random.default_rng(1)
    sent = {dt: _typed(dt, rng) for dt in DATATYPES}
    inputs = []
    for dt, arr in sent.items():
        tensor = httpclient.InferInput(f"IN_{dt}", list(arr.shape), dt)
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput(f"OUT_{dt}", binary_data=binary) for dt in DATATYPES]
    result = client.infer("ident", inputs, outputs=outputs)
    for dt, arr in sent.items():
        got = result.as_numpy(f"OUT_{dt}")
        if dt == "BYTES":
            assert [b.decode() if isinstance(b, bytes) else b for b in got.reshape(-1)] == list(arr.reshape(-1))
        else:
            assert got.dtype == arr.dtype, dt
            np.testing.assert_array_equal(got, arr, err_msg=dt)


def test_repository_index_lists_versions(client: httpclient.InferenceServerClient) -> None:
    index = {(m["name"], m.get("version")): m["state"] for m in client.get_model_repository_index()}
    assert index[("affine", "1")] == index[("affine", "2")] == "READY"
    assert index[("ident", "1")] == "READY"


def test_metrics_count_requests_by_outcome(client: httpclient.InferenceServerClient, server: Server) -> None:
    labels = {"model": "affine", "version": "1"}
    before = server.metric("meshserve_inference_requests_total", outcome="success", **labels)
    errors = server.metric("meshserve_inference_requests_total", outcome="error", **labels)
    client.infer("affine", [affine_input(np.zeros((1, 4), np.float32), True)], model_version="1")
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1]}]}
    assert server.post("/v2/models/affine/versions/1/infer", json=bad).status_code == 400
    assert server.metric("meshserve_inference_requests_total", outcome="success", **labels) == before + 1
    assert server.metric("meshserve_inference_requests_total", outcome="error", **labels) == errors + 1
    assert server.metric("meshserve_inference_request_duration_seconds_count", **labels) >= before + 2
    assert server.metric("meshserve_model_state", state="READY", **labels) == 1
    assert server.metric("meshserve_model_state", state="UNAVAILABLE", **labels) == 0


@pytest.mark.parametrize("rows", [1, 3, 20])
def test_model_without_batch_dimension(client: httpclient.InferenceServerClient, repo: Repo, rows: int) -> None:
    meta = client.get_model_metadata("plain")
    assert meta["inputs"][0]["shape"] == [-1, 4]  # the graph's own dims: max_batch_size 0 caps nothing
    x = np.linspace(-1, 1, rows * 4, dtype=np.float32).reshape(rows, 4)
    result = client.infer("plain", [affine_input(x, True)])
    np.testing.assert_array_equal(result.as_numpy("y"), repo.reference("plain", 1, {"x": x})["y"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_large_tensor_round_trips(client: httpclient.InferenceServerClient, binary: bool) -> None:
    # 8 rows fill varwidth's max batch at once; as JSON the body is over jsonload.LARGE (simdjson path)
    x = np.random.default_rng(5).standard_normal((8, 1500)).astype(np.float32)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("varwidth", [tensor], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)])
    np.testing.assert_array_equal(result.as_numpy("y"), x)
