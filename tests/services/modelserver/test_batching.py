"""Dynamic batching and admission control, made deterministic by a 60 s queue delay: a batch leaves
only when it fills max_batch_size or a preferred size, so the tests synchronise on metrics, not time."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from services.modelserver.batching import TIMER_TICK, timer_wait
from tests.services.modelserver.conftest import Repo
from tests.services.modelserver.serverproc import Server, wait_for


def infer(server: Server, model: str, x: np.ndarray, binary: bool = True, **kwargs: object) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.url, network_timeout=30)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return client.infer(model, [tensor], **kwargs).as_numpy("y")


def counters(server: Server, model: str) -> tuple[float, float, float]:
    labels = {"model": model, "version": "1"}
    return (
        server.metric("meshserve_inference_exec_count_total", **labels),
        server.metric("meshserve_inference_count_total", **labels),
        server.metric("meshserve_inference_batch_size_sum", **labels),
    )


def run_together(server: Server, model: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with ThreadPoolExecutor(len(inputs)) as pool:
        futures = [pool.submit(infer, server, model, x, i % 2 == 0) for i, x in enumerate(inputs)]
        return [f.result() for f in futures]


def test_concurrent_requests_of_several_sizes_share_one_exact_batch(server: Server, repo: Repo) -> None:
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (1, 2, 3, 2)]  # 8 rows = max batch
    before = counters(server, "batched")
    answers = run_together(server, "batched", inputs)
    after = counters(server, "batched")
    assert after[0] - before[0] == 1, "the four requests should run as one execution"
    assert after[1] - before[1] == 8 and after[2] - before[2] == 8
    for x, got in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(got, repo.reference("batched", 1, {"x": x})["y"])


def test_preferred_batch_size_dispatches_before_the_delay(server: Server, repo: Repo) -> None:
    inputs = [np.full((n, 4), n, np.float32) for n in (1, 3)]  # 4 rows: the preferred size, not the max 8
    before = counters(server, "preferred")
    answers = run_together(server, "preferred", inputs)
    after = counters(server, "preferred")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 4)
    for x, got in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(got, repo.reference("preferred", 1, {"x": x})["y"])


def test_only_compatible_shapes_are_batched(server: Server, repo: Repo) -> None:
    def call(x: np.ndarray) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.url, network_timeout=30)
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer("varwidth", [tensor]).as_numpy("y")

    inputs = [np.full((4, 2), 1, np.float32), np.full((8, 3), 2, np.float32), np.full((4, 2), 3, np.float32)]
    before = counters(server, "varwidth")
    with ThreadPoolExecutor(3) as pool:
        answers = [f.result() for f in [pool.submit(call, x) for x in inputs]]
    after = counters(server, "varwidth")
    assert (after[0] - before[0], after[1] - before[1]) == (2, 16)  # [4x2 + 4x2] and [8x3]
    for x, got in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(got, x)


def test_full_queue_is_refused_at_once_and_unload_finishes_the_queued(server: Server, repo: Repo) -> None:
    depth = {"model": "admission", "version": "1"}
    x = np.ones((1, 4), np.float32)
    with ThreadPoolExecutor(2) as pool:
        queued: list[Future] = [pool.submit(infer, server, "admission", x) for _ in range(2)]
        wait_for(lambda: server.metric("meshserve_inference_queue_depth", **depth) == 2, what="2 queued")
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}
        refused = server.post("/v2/models/admission/infer", json=body)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "queue is full" in refused.json()["error"]
        assert server.metric("meshserve_inference_requests_total", outcome="rejected", **depth) >= 1
        # unloading drains: the queued requests are executed, not dropped
        assert server.post("/v2/repository/models/admission/unload").status_code == 200
        expected = repo.reference("admission", 1, {"x": x})["y"]
        for future in queued:
            np.testing.assert_array_equal(future.result(), expected)
    assert server.post("/v2/repository/models/admission/load").status_code == 200


@pytest.mark.parametrize(
    ("model", "timeout_us"),
    [("admission", 100_000), ("deadline", 60_000_000)],  # request parameter; config default wins
    ids=["request-timeout", "config-timeout"],
)
def test_request_timing_out_in_queue_gets_504_and_never_runs(server: Server, model: str, timeout_us: int) -> None:
    wait_for(lambda: server.get(f"/v2/models/{model}/ready").status_code == 200, what=f"{model} ready")
    labels = {"model": model, "version": "1"}
    executions = server.metric("meshserve_inference_exec_count_total", **labels)
    with pytest.raises(InferenceServerException) as err:
        infer(server, model, np.ones((1, 4), np.float32), timeout=timeout_us)
    assert err.value.status() == "504" or "504" in str(err.value)
    assert "timed out" in str(err.value)
    assert server.metric("meshserve_inference_queue_depth", **labels) == 0
    assert server.metric("meshserve_inference_exec_count_total", **labels) == executions
    assert server.metric("meshserve_inference_requests_total", outcome="timeout", **labels) >= 1


@pytest.mark.parametrize(
    ("remaining", "wait"),
    [(-0.001, None), (0.0, None), (0.0003, None), (0.0006, TIMER_TICK), (0.001, 0.001), (0.0025, 0.0025)],
)
def test_queue_delay_waits_in_whole_timer_ticks(remaining: float, wait: float | None) -> None:
    """Sub-tick waits would fire at once and spin the loop; they count as over, longer ones take >= 1 tick."""
    assert timer_wait(remaining) == wait
