"""SIGTERM under load: readiness false first, queued and in-flight requests finish, new ones get 503
with Retry-After (never a reset), then the process exits 0."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.services.modelserver.onnx_models import affine, write_config
from tests.services.modelserver.serverproc import Server, run_server, wait_for

WORKERS = 6


def worker(server: Server, x: np.ndarray, outcomes: list) -> None:
    """Send requests back to back until one is refused; record every outcome."""
    client = httpclient.InferenceServerClient(server.url, network_timeout=30)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    for _ in range(50):
        try:
            outcomes.append(("ok", client.infer("slow", [tensor]).as_numpy("y")))
        except InferenceServerException as exc:
            outcomes.append((exc.status(), str(exc)))
            return
        except Exception as exc:  # a reset or refused connection: must not happen
            outcomes.append(("transport", repr(exc)))
            return


def test_sigterm_drains_without_losing_accepted_requests(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    model = affine(repo / "slow" / "1" / "model.onnx", seed=4)
    # a 60 s queue delay: every worker's first request is accepted and still queued at SIGTERM
    write_config(repo / "slow", max_batch_size=64, dynamic_batching={"max_queue_delay_microseconds": 60_000_000})
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    with run_server(repo, "--drain-grace", "2.0", log_dir=tmp_path) as server:
        inputs = [np.full((1 + i % 3, 4), i, np.float32) for i in range(WORKERS)]
        outcomes: list[list] = [[] for _ in range(WORKERS)]
        threads = [
            threading.Thread(target=worker, args=(server, x, out)) for x, out in zip(inputs, outcomes, strict=True)
        ]
        for thread in threads:
            thread.start()
        labels = {"model": "slow", "version": "1"}
        wait_for(lambda: server.metric("meshserve_inference_queue_depth", **labels) == WORKERS, what="all queued")

        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(server.base + "/v2/health/ready").status_code == 503, what="not ready")
        late = httpx.post(server.base + "/v2/models/slow/infer", json={"inputs": []})
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        for thread in threads:
            thread.join(30)
        assert server.proc.wait(30) == 0

    for x, out in zip(inputs, outcomes, strict=True):
        statuses = [o[0] for o in out]
        assert statuses == ["ok", "503"], out  # the accepted request answered, the next refused
        np.testing.assert_array_equal(out[0][1], reference.run(["y"], {"x": x})[0])
        assert "shutting down" in out[1][1]
    logs = server.logs()
    assert "draining" in logs and "drained; shutting down" in logs


def test_sigterm_drains_grpc_without_cancelling_calls_in_flight(tmp_path: Path) -> None:
    """triton#8253: calls in flight at SIGTERM must finish, not end CANCELED; new ones get UNAVAILABLE."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    repo = tmp_path / "repo"
    model = affine(repo / "slow" / "1" / "model.onnx", seed=4)
    write_config(repo / "slow", max_batch_size=64, dynamic_batching={"max_queue_delay_microseconds": 60_000_000})
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    with run_server(repo, "--drain-grace", "1.0", log_dir=tmp_path, grpc=True) as server:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))

        def request(x: np.ndarray) -> service_pb2.ModelInferRequest:
            message = service_pb2.ModelInferRequest(model_name="slow")
            message.inputs.add(name="x", datatype="FP32", shape=x.shape)
            message.raw_input_contents.append(x.tobytes())
            return message

        inputs = [np.full((1 + i % 3, 4), i, np.float32) for i in range(WORKERS)]
        calls = [stub.ModelInfer.future(request(x), timeout=60) for x in inputs]
        labels = {"model": "slow", "version": "1"}
        wait_for(lambda: server.metric("meshserve_inference_queue_depth", **labels) == WORKERS, what="all queued")

        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(server.base + "/v2/health/ready").status_code == 503, what="not ready")
        try:
            stub.ModelInfer(request(inputs[0]), timeout=10)
            raise AssertionError("a call after SIGTERM was accepted")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in exc.details()
        for x, call in zip(inputs, calls, strict=True):
            response = call.result(timeout=30)  # raises if CANCELED
            y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(len(x), 3)
            np.testing.assert_array_equal(y, reference.run(["y"], {"x": x})[0])
        assert server.proc.wait(30) == 0
