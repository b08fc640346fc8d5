"""Triton's HTTP extensions that tools rely on (model configuration, statistics) and compressed
request bodies, driven with tritonclient.http against the shared server process."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.services.modelserver.conftest import MAX_BODY, Repo
from tests.services.modelserver.serverproc import Server


@pytest.fixture
def client(server: Server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def _x(rows: int = 2) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", [rows, 4], "FP32")
    tensor.set_data_from_numpy(np.arange(rows * 4, dtype=np.float32).reshape(rows, 4))
    return tensor


def test_model_config_in_tritons_shape(client: httpclient.InferenceServerClient, server: Server) -> None:
    config = client.get_model_config("affine")
    assert config["name"] == "affine"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [4]}]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("y", "TYPE_FP32", [3]),
        ("relu", "TYPE_FP32", [3]),
    ]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert config["instance_group"][0]["count"] == 2
    assert config["version_policy"] == {"all": {}}
    assert config["parameters"]["owner"] == {"string_value": "tests"}
    assert client.get_model_config("affine", "1")["name"] == "affine"
    # no batch dimension: dims are the whole shape, and no dynamic_batching
    plain = client.get_model_config("plain")
    assert plain["max_batch_size"] == 0 and "dynamic_batching" not in plain
    assert plain["input"][0]["dims"] == [-1, 4]
    strings = {i["name"]: i["data_type"] for i in client.get_model_config("ident")["input"]}
    assert strings["IN_BYTES"] == "TYPE_STRING" and strings["IN_FP16"] == "TYPE_FP16"
    for path in ("/v2/models/nope/config", "/v2/models/affine/versions/9/config"):
        response = server.get(path)
        assert response.status_code == 404 and "error" in response.json()


def test_statistics_count_inferences_and_durations(client: httpclient.InferenceServerClient, server: Server) -> None:
    def stats() -> dict:
        (entry,) = client.get_inference_statistics("plain", "1")["model_stats"]
        return entry

    before = stats()
    for _ in range(3):
        client.infer("plain", [_x(5)])
    after = stats()
    assert (after["name"], after["version"]) == ("plain", "1")
    inference = after["inference_stats"]
    assert int(inference["success"]["count"]) - int(before["inference_stats"]["success"]["count"]) == 3
    assert int(after["execution_count"]) - int(before["execution_count"]) == 3
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert int(inference[key]["ns"]) > int(before["inference_stats"][key]["ns"]), key
    assert int(after["last_inference"]) > 0
    with pytest.raises(InferenceServerException):
        client.infer("plain", [httpclient.InferInput("x", [5, 5], "FP32").set_data_from_numpy(np.ones((5, 5), "f4"))])
    assert int(stats()["inference_stats"]["fail"]["count"]) == int(before["inference_stats"]["fail"]["count"]) + 1
    # unversioned: every serving version; no model: every model
    assert [e["version"] for e in client.get_inference_statistics("affine")["model_stats"]] == ["1", "2"]
    everything = {(e["name"], e["version"]) for e in client.get_inference_statistics()["model_stats"]}
    assert {("plain", "1"), ("affine", "2"), ("ident", "1")} <= everything
    assert server.get("/v2/models/nope/stats").status_code == 404


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: httpclient.InferenceServerClient, repo: Repo, algorithm: str) -> None:
    x = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    tensor = httpclient.InferInput("x", [4, 4], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("affine", [tensor], model_version="1", request_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("y"), repo.reference("affine", 1, {"x": x})["y"])


def test_compression_bomb_and_bad_encodings(server: Server) -> None:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
    path = "/v2/models/affine/infer"
    ok = server.post(path, content=zlib.compress(body), headers={"content-encoding": "deflate"})
    assert ok.status_code == 200
    bomb = gzip.compress(b" " * (MAX_BODY * 4))  # tiny on the wire, 4x the limit decoded
    assert len(bomb) < MAX_BODY // 10
    response = server.post(path, content=bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    response = server.post(path, content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["error"]
    response = server.post(path, content=gzip.compress(body)[:-12], headers={"content-encoding": "gzip"})
    assert response.status_code == 400
    response = server.post(path, content=body, headers={"content-encoding": "br"})
    assert response.status_code == 415 and "br" in response.json()["error"]
    assert server.get("/v2/health/ready").status_code == 200
