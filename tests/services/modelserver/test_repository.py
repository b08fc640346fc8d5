"""Loading and unloading without a restart: by polling the folder and through the repository API.
A version that fails to load is reported and never takes down what is already serving."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.services.modelserver.onnx_models import affine, write_config
from tests.services.modelserver.serverproc import Server, run_server, wait_for

X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8


def expected(model: bytes) -> np.ndarray:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["y"], {"x": X})[0]


def infer(server: Server, model: str, version: str = "") -> tuple[str, np.ndarray]:
    client = httpclient.InferenceServerClient(server.url)
    tensor = httpclient.InferInput("x", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(model, [tensor], model_version=version)
    return result.get_response()["model_version"], result.as_numpy("y")


def index(server: Server) -> dict[tuple[str, str | None], dict]:
    return {(row["name"], row.get("version")): row for row in server.post("/v2/repository/index").json()}


def row(server: Server, model: str, version: str | None) -> dict:
    """The index row of one version ({} until the server reports it)."""
    return index(server).get((model, version), {})


def put_file(path: Path, data: bytes) -> None:
    """Write next to the target, then rename: the poller never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def version_ready(server: Server, model: str, version: str) -> bool:
    return server.get(f"/v2/models/{model}/versions/{version}/ready").status_code == 200


def test_polling_adds_removes_and_survives_broken_versions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    v1 = affine(repo / "hot" / "1" / "model.onnx", seed=1)
    write_config(repo / "hot", max_batch_size=4, version_policy={"all": {}})
    with run_server(repo, "--poll-interval", "0.05", log_dir=tmp_path) as server:
        assert infer(server, "hot") == ("1", pytest.approx(expected(v1)))

        # hot add
        v2 = affine(tmp_path / "v2.onnx", seed=2)
        put_file(repo / "hot" / "2" / "model.onnx", v2)
        wait_for(lambda: version_ready(server, "hot", "2"), what="version 2 ready")
        version, y = infer(server, "hot")
        assert version == "2"
        np.testing.assert_array_equal(y, expected(v2))

        # hot remove
        shutil.rmtree(repo / "hot" / "1")
        wait_for(lambda: row(server, "hot", "1").get("state") == "UNLOADED", what="version 1 unloaded")
        assert server.get("/v2/models/hot/versions/1/ready").status_code == 503
        assert server.post("/v2/models/hot/versions/1/infer", json={"inputs": []}).status_code == 404

        # a broken new version is reported; version 2 keeps serving and stays the default
        put_file(repo / "hot" / "3" / "model.onnx", b"this is not an onnx file")
        wait_for(lambda: row(server, "hot", "3").get("state") == "UNAVAILABLE", what="version 3 reported")
        assert "failed to load" in index(server)[("hot", "3")]["reason"]
        assert server.metric("meshserve_model_load_failures_total", model="hot", version="3") >= 1
        assert server.metric("meshserve_model_state", model="hot", version="3", state="UNAVAILABLE") == 1
        np.testing.assert_array_equal(infer(server, "hot")[1], expected(v2))

        # a broken replacement of a serving version's file leaves the loaded session serving
        put_file(repo / "hot" / "2" / "model.onnx", b"garbage")
        wait_for(lambda: "previously loaded" in row(server, "hot", "2").get("reason", ""), what="reload failure")
        assert index(server)[("hot", "2")]["state"] == "READY"
        assert infer(server, "hot", "2") == ("2", pytest.approx(expected(v2)))
        assert server.get("/v2/health/ready").status_code == 200
        assert "failed to load" in server.logs()


def test_repository_api_loads_and_unloads(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    v1 = affine(repo / "api" / "1" / "model.onnx", seed=1)
    write_config(repo / "api", max_batch_size=4)  # default policy: latest 1
    affine(repo / "other" / "1" / "model.onnx", seed=5)
    write_config(repo / "other", max_batch_size=4, required=False)
    with run_server(repo, "--poll-interval", "0", "--model", "api", log_dir=tmp_path) as server:
        client = httpclient.InferenceServerClient(server.url)
        assert not client.is_model_ready("other"), "--model api serves only api"
        assert infer(server, "api")[0] == "1"

        client.unload_model("api")
        assert not client.is_model_ready("api")
        assert not client.is_server_ready(), "a required model is unloaded"
        assert index(server)[("api", "1")]["state"] == "UNLOADED"

        v2 = affine(tmp_path / "v2.onnx", seed=2)
        put_file(repo / "api" / "2" / "model.onnx", v2)
        client.load_model("api")  # returns once loaded: no polling involved
        assert client.is_server_ready()
        version, y = infer(server, "api")
        assert version == "2"
        np.testing.assert_array_equal(y, expected(v2))
        assert index(server)[("api", "1")]["state"] == "UNLOADED", "latest 1: version 1 not served"
        assert v1 != v2

        # a rejected config fails the load call and leaves the serving version alone
        good_config = (repo / "api" / "config.yaml").read_text()
        (repo / "api" / "config.yaml").write_text(good_config + "max_batch_sise: 3\n")
        with pytest.raises(InferenceServerException, match=r"still serving versions \[2\].*max_batch_sise"):
            client.load_model("api")
        assert infer(server, "api")[0] == "2"
        (repo / "api" / "config.yaml").write_text(good_config)

        with pytest.raises(InferenceServerException, match="not supported"):
            client.load_model("api", config='{"max_batch_size": 2}')
        response = server.post("/v2/repository/models/missing/load")
        assert response.status_code == 404 and "not served by this process" in response.json()["error"]
        ready_only = server.post("/v2/repository/index", json={"ready": True}).json()
        assert [(r["name"], r["version"]) for r in ready_only] == [("api", "2")]


def raw_post(server: Server, path: str) -> tuple[int, dict]:
    """POST the path exactly as written: http.client does not resolve '.' and '..' segments as httpx does."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_bad_loads_leave_no_record_and_readiness_alone(tmp_path: Path) -> None:
    repo = tmp_path / "models" / "repo"
    affine(repo / "good" / "1" / "model.onnx", seed=1)
    write_config(repo / "good", max_batch_size=4)
    affine(tmp_path / "models" / "1" / "model.onnx", seed=2)  # the repository's parent looks like a model folder
    write_config(tmp_path / "models", max_batch_size=4)
    (repo / ".hidden").mkdir()
    with run_server(repo, "--poll-interval", "0", log_dir=tmp_path) as server:
        before = index(server)
        status, body = raw_post(server, "/v2/repository/models/nope/load")
        assert status == 404 and "no model 'nope'" in body["error"]
        for name in ("..", ".", "%2E%2E", ".hidden", "a%5Cb", "a%00b"):
            status, body = raw_post(server, f"/v2/repository/models/{name}/load")
            assert status == 400, (name, body)
            assert "invalid model name" in body["error"]
        assert server.get("/v2/health/ready").status_code == 200, "a bad load must not make the server unready"
        assert index(server) == before
        assert server.get("/v2/models/nope/ready").status_code == 404


def test_model_flag_pins_one_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    v1 = affine(repo / "pin" / "1" / "model.onnx", seed=1)
    affine(repo / "pin" / "2" / "model.onnx", seed=2)
    write_config(repo / "pin", max_batch_size=4, version_policy={"latest": {"num_versions": 1}})
    with run_server(repo, "--model", "pin:1", log_dir=tmp_path) as server:
        assert server.get("/v2/models/pin").json()["versions"] == ["1"]
        assert infer(server, "pin") == ("1", pytest.approx(expected(v1)))
        assert server.get("/v2/models/pin/versions/2/ready").status_code == 503


def test_broken_config_is_reported_and_not_ready(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    affine(repo / "bad" / "1" / "model.onnx", seed=1)
    write_config(repo / "bad", max_batch_size=4, instance_group={"count": 1, "kidn": "KIND_CPU"})
    with run_server(repo, "--poll-interval", "0", log_dir=tmp_path, ready=False) as server:
        wait_for(lambda: row(server, "bad", None), what="config failure reported")
        entry = index(server)[("bad", None)]
        assert entry["state"] == "UNAVAILABLE" and "kidn" in entry["reason"]
        assert server.get("/v2/health/ready").status_code == 503
        assert server.get("/v2/health/live").status_code == 200
        assert "kidn" in server.post("/v2/models/bad/infer", json={}).json()["error"]
