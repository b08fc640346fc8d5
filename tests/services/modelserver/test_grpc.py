"""v2 gRPC on the shared server process, driven with tritonclient.grpc (sync, asyncio and
streaming) and, for typed contents and hostile messages, with tritonclient's own copy of the
upstream protocol stubs; every answer is checked against onnxruntime run here."""

from __future__ import annotations

import asyncio
import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.services.modelserver.conftest import MAX_BODY, Repo
from tests.services.modelserver.onnx_models import DATATYPES
from tests.services.modelserver.serverproc import Server

TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@pytest.fixture
def client(server: Server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture
def stub(server: Server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    channel = grpc.insecure_channel(server.grpc_url, options=[("grpc.max_send_message_length", 8 * MAX_BODY)])
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


def sample(datatype: str, rows: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = DATATYPES[datatype][1]
    if datatype == "BYTES":
        return np.array([[f"s{i}-é" for i in range(3)] for _ in range(rows)], dtype=object)
    if datatype == "BOOL":
        return rng.integers(0, 2, (rows, 3)).astype(bool)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal((rows, 3)).astype(dtype)
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max, 7]] * rows, dtype=dtype)


def grpc_input(name: str, x: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def test_health_metadata_config_and_statistics(client: grpcclient.InferenceServerClient, server: Server) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "meshserve" and {"model_configuration", "statistics"} <= set(meta.extensions)
    model = client.get_model_metadata("affine")
    assert list(model.versions) == ["1", "2"] and model.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "FP32", [-1, 4])]
    assert list(client.get_model_metadata("affine", "1").versions) == ["1"]
    assert client.is_model_ready("affine", "1") and not client.is_model_ready("affine", "7")
    config = client.get_model_config("affine").config
    assert config.max_batch_size == 8 and config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("x", 11, [4])]  # 11 = TYPE_FP32
    assert config.instance_group[0].count == 2
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "unknown model" in err.value.message()
    before = client.get_inference_statistics("plain", "1").model_stats[0]
    client.infer("plain", [grpc_input("x", np.ones((3, 4), np.float32), "FP32")])
    after = client.get_inference_statistics("plain", "1").model_stats[0]
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    index = {(m.name, m.version, m.state) for m in client.get_model_repository_index().models}
    assert ("affine", "2", "READY") in index
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_url))
    for service in ("", "inference.GRPCInferenceService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == 1  # SERVING


@pytest.mark.parametrize("version", ["1", "2", ""], ids=["v1", "v2", "newest"])
def test_infer_equals_onnxruntime(client: grpcclient.InferenceServerClient, repo: Repo, version: str) -> None:
    x = np.random.default_rng(11).standard_normal((5, 4)).astype(np.float32)
    result = client.infer("affine", [grpc_input("x", x, "FP32")], model_version=version, request_id="g-1")
    answered = int(version or 2)
    response = result.get_response()
    assert response.id == "g-1" and response.model_version == str(answered)
    expected = repo.reference("affine", answered, {"x": x})
    for name in ("y", "relu"):
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    only = client.infer("affine", [grpc_input("x", x, "FP32")], outputs=[grpcclient.InferRequestedOutput("relu")])
    assert [o.name for o in only.get_response().outputs] == ["relu"]


def test_every_datatype_raw(client: grpcclient.InferenceServerClient, repo: Repo) -> None:
    inputs = {dt: sample(dt) for dt in DATATYPES}
    result = client.infer("ident", [grpc_input(f"IN_{dt}", x, dt) for dt, x in inputs.items()])
    expected = repo.reference("ident", 1, {f"IN_{dt}": x for dt, x in inputs.items()})
    for dt in DATATYPES:
        got = result.as_numpy(f"OUT_{dt}")
        if dt == "BYTES":
            assert [v.decode() for v in got.reshape(-1)] == list(expected[f"OUT_{dt}"].reshape(-1))
        else:
            assert got.dtype == expected[f"OUT_{dt}"].dtype
            np.testing.assert_array_equal(got, expected[f"OUT_{dt}"])


def typed_request(inputs: dict[str, np.ndarray], model: str = "typed") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id="typed")
    for dt, x in inputs.items():
        tensor = request.inputs.add(name=f"IN_{dt}", datatype=dt, shape=x.shape)
        values = [v.encode() for v in x.reshape(-1)] if dt == "BYTES" else x.reshape(-1).tolist()
        getattr(tensor.contents, TYPED_FIELDS[dt]).extend(values)
    return request


@pytest.mark.parametrize("typed_out", [True, False], ids=["typed-out", "raw-out"])
def test_every_datatype_typed_contents(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, repo: Repo, typed_out: bool
) -> None:
    inputs = {dt: sample(dt, seed=5) for dt in DATATYPES if dt != "FP16"}
    request = typed_request(inputs)
    if typed_out:
        request.parameters["binary_data_output"].bool_param = False
    response = stub.ModelInfer(request)
    assert response.id == "typed"
    expected = repo.reference("typed", 1, {f"IN_{dt}": x for dt, x in inputs.items()})
    assert bool(response.raw_output_contents) is not typed_out
    for index, out in enumerate(response.outputs):
        dt = out.datatype
        want = expected[out.name].reshape(-1)
        assert list(out.shape) == [2, 3]
        if typed_out:
            values = list(getattr(out.contents, TYPED_FIELDS[dt]))
            got = [v.decode() for v in values] if dt == "BYTES" else np.array(values, dtype=want.dtype)
        else:
            raw = response.raw_output_contents[index]
            got = _strings(raw) if dt == "BYTES" else np.frombuffer(raw, want.dtype)
        if dt == "BYTES":
            assert list(got) == list(want)
        else:
            np.testing.assert_array_equal(got, want)


def _strings(raw: bytes) -> list[str]:
    out, offset = [], 0
    while offset < len(raw):
        n = int.from_bytes(raw[offset : offset + 4], "little")
        out.append(raw[offset + 4 : offset + 4 + n].decode())
        offset += 4 + n
    return out


def test_fp16_has_no_typed_field(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = typed_request({dt: sample(dt) for dt in DATATYPES if dt != "FP16"}, model="ident")
    request.inputs.add(name="IN_FP16", datatype="FP16", shape=[2, 3])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in err.value.details()


def test_typed_inputs_reach_the_model(stub: service_pb2_grpc.GRPCInferenceServiceStub, repo: Repo) -> None:
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="affine", model_version="1")
    request.inputs.add(name="x", datatype="FP32", shape=[3, 4]).contents.fp32_contents.extend(x.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(3, 3)
    np.testing.assert_array_equal(y, repo.reference("affine", 1, {"x": x})["y"])


def test_asyncio_client_concurrent(server: Server, repo: Repo) -> None:
    async def main() -> list:
        client = aioclient.InferenceServerClient(server.grpc_url)
        try:
            assert await client.is_server_ready()
            xs = [np.full((1 + i % 4, 4), i, np.float32) for i in range(16)]
            tensors = []
            for x in xs:
                tensor = aioclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                tensors.append(tensor)
            results = await asyncio.gather(*(client.infer("affine", [t], model_version="2") for t in tensors))
            return [(x, r.as_numpy("y")) for x, r in zip(xs, results, strict=True)]
        finally:
            await client.close()

    for x, y in asyncio.run(main()):
        np.testing.assert_array_equal(y, repo.reference("affine", 2, {"x": x})["y"])


def test_streaming_answers_every_request_and_errors_in_band(
    client: grpcclient.InferenceServerClient, repo: Repo
) -> None:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    xs = {f"s{i}": np.full((1, 4), i, np.float32) for i in range(6)}
    try:
        for request_id, x in xs.items():
            client.async_stream_infer("affine", [grpc_input("x", x, "FP32")], request_id=request_id)
        client.async_stream_infer("affine", [grpc_input("x", np.ones((1, 5), np.float32), "FP32")], request_id="bad")
        got = [answers.get(timeout=30) for _ in range(len(xs) + 1)]
    finally:
        client.stop_stream()
    errors = [e for _, e in got if e is not None]
    assert len(errors) == 1 and "does not match" in str(errors[0])
    for result, error in got:
        if error is None:
            request_id = result.get_response().id
            expected = repo.reference("affine", 2, {"x": xs[request_id]})["y"]
            np.testing.assert_array_equal(result.as_numpy("y"), expected)


def raw_affine(shape: list[int], raw: bytes, model: str = "affine") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (raw_affine([2, 4], b"\0" * 31), "INVALID_ARGUMENT", "raw_input_contents has 31 bytes"),
        (raw_affine([2, 4], b"\0" * 64), "INVALID_ARGUMENT", "need 32"),
        (raw_affine([2**40, 4], b"\0" * 32), "INVALID_ARGUMENT", "batch size"),
        (raw_affine([-1, 4], b"\0" * 32), "INVALID_ARGUMENT", "non-negative"),
        (raw_affine([2, 2**62], b"\0" * 32), "INVALID_ARGUMENT", "does not match"),
        (raw_affine([1, 4], b"\0" * 16, model="nope"), "NOT_FOUND", "unknown model"),
        (raw_affine([16], b"\0" * 64, model="plain"), "INVALID_ARGUMENT", "does not match"),
        (service_pb2.ModelInferRequest(model_name="affine"), "INVALID_ARGUMENT", "non-empty list"),
    ],
    ids=["short-raw", "long-raw", "huge-batch", "negative-dim", "huge-dim", "unknown-model", "rank", "no-inputs"],
)
def test_hostile_messages_get_a_clear_status(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, request_: object, code: str, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request_)
    assert err.value.code() == grpc.StatusCode[code], err.value.details()
    assert words in err.value.details()


def test_more_hostile_messages(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: grpcclient.InferenceServerClient
) -> None:
    two = raw_affine([1, 4], b"\0" * 16)
    two.raw_input_contents.append(b"\0" * 16)
    lying_strings = service_pb2.ModelInferRequest(model_name="ident")
    for dt in DATATYPES:
        lying_strings.inputs.add(name=f"IN_{dt}", datatype=dt, shape=[1, 3])
        size = 3 * np.dtype(DATATYPES[dt][1]).itemsize if dt != "BYTES" else 0
        lying_strings.raw_input_contents.append(b"\xff\xff\xff\x7f" + b"x" * 8 if dt == "BYTES" else b"\0" * size)
    out_of_range = typed_request({dt: sample(dt, rows=1) for dt in DATATYPES if dt != "FP16"})
    int8 = next(t for t in out_of_range.inputs if t.name == "IN_INT8")
    int8.contents.int_contents[0] = 1000
    cases = [
        (two, "raw_input_contents has 2 entries"),
        (lying_strings, "runs past"),
        (out_of_range, "out of range for INT8"),
    ]
    for request, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details(), err.value
    oversize = raw_affine([1, 4], b"\0" * (2 * MAX_BODY))
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(oversize)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # a queued request past its deadline: the model's 100 ms queue timeout -> DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(raw_affine([1, 4], b"\0" * 16, model="deadline"))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in err.value.details()
    assert client.is_server_ready()  # and still serving
