"""The gateway's gRPC listener with tritonclient.grpc: key-auth in metadata, the version split within
binomial tolerance, the x-model-version override, rate limits, answers equal to onnxruntime."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from services.gateway.grpc_proxy import name_and_version
from tests.services.gateway.stack import API_KEY, LIMITED_KEY, MODELS, Stack, base_spec, running
from tests.services.modelserver.serverproc import free_port

KEY = {"apikey": API_KEY}
N = 400


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("grpc"), base_spec(MODELS), grpc=True)
    with running(stack):
        stack.start_servers(MODELS, {("digits", 1): 1, ("digits", 2): 1})
        stack.grpc_port = free_port()  # type: ignore[attr-defined]
        stack.start_gateway(args=["--grpc-port", str(stack.grpc_port)])  # type: ignore[attr-defined]
        yield stack


@pytest.fixture
def client(stack: Stack) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{stack.grpc_port}")  # type: ignore[attr-defined]


def pixels(rows: int = 1, seed: int = 0) -> grpcclient.InferInput:
    x = np.random.default_rng(seed).integers(0, 17, size=(rows, 1, 8, 8)).astype(np.float32) / 16
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def reference(version: int, tensor: grpcclient.InferInput, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 17, size=(1, 1, 8, 8)).astype(np.float32) / 16
    session = ort.InferenceSession(str(MODELS / "digits" / str(version) / "model.onnx"))
    return session.run(None, {"input": x})[0]


def test_split_and_answers(client: grpcclient.InferenceServerClient) -> None:
    versions: Counter = Counter()
    for i in range(N):
        result = client.infer("digits", [pixels(seed=i % 7)], headers=KEY)
        version = int(result.get_response().model_version)
        versions[version] += 1
        if i < 14:
            expected = reference(version, pixels(), i % 7)
            np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    expected, sigma = N * 0.10, math.sqrt(N * 0.10 * 0.90)
    assert set(versions) <= {1, 2} and abs(versions[2] - expected) <= 4.5 * sigma, versions


def test_override_and_explicit_version(client: grpcclient.InferenceServerClient) -> None:
    for _ in range(20):
        answer = client.infer("digits", [pixels()], headers={**KEY, "x-model-version": "2"}).get_response()
        assert answer.model_version == "2"
        assert client.infer("digits", [pixels()], model_version="1", headers=KEY).get_response().model_version == "1"


def test_metadata_holds_still(client: grpcclient.InferenceServerClient) -> None:
    answers = {tuple(client.get_model_metadata("digits", headers=KEY).versions) for _ in range(20)}
    assert len(answers) == 1
    assert client.is_model_ready("digits", headers=KEY)
    assert client.get_model_config("digits", headers=KEY).config.max_batch_size == 64
    assert client.is_server_live() and client.is_server_ready()


def test_auth_and_rate_limit(client: grpcclient.InferenceServerClient) -> None:
    for headers, words in (({}, "No API key"), ({"apikey": "wrong"}, "Invalid authentication")):
        with pytest.raises(InferenceServerException) as err:
            client.infer("digits", [pixels()], headers=headers)
        assert err.value.status() == "StatusCode.UNAUTHENTICATED" and words in err.value.message()
    statuses = []
    for _ in range(7):
        try:
            client.infer("digits", [pixels()], headers={"apikey": LIMITED_KEY})
            statuses.append("ok")
        except InferenceServerException as exc:
            statuses.append(exc.status())
    assert statuses[:5] == ["ok"] * 5 and set(statuses[5:]) == {"StatusCode.RESOURCE_EXHAUSTED"}
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [pixels()], headers=KEY)
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_name_and_version_reads_only_fields_one_and_two() -> None:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="digits", model_version="2", id="x")
    request.raw_input_contents.append(b"\x0a" * 1000)  # bytes that look like tags must be jumped over
    assert name_and_version(request.SerializeToString()) == ("digits", "2")
    assert name_and_version(service_pb2.ModelMetadataRequest(name="m").SerializeToString()) == ("m", "")
    with pytest.raises(ValueError):
        name_and_version(b"\x0a\xff")
