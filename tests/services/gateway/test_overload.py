"""More concurrent requests than the pool admits: 503s, no pile-up of timeouts, full recovery.

Asserted on statuses and counts, not on time: no request waits out a timeout (no 504), every
refusal is a counted 503 with Retry-After, and the model server never holds more than
max_connections requests at once (its batches: one row per request, collected for 50 ms).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services.gateway.stack import MODELS, Stack, base_spec, fire, repository_with, running

MAX_CONNECTIONS, MAX_PENDING, TIMEOUT = 2, 2, 2.0
BURST = 64


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("overload")
    # A slow but healthy version: the batcher holds each batch 50 ms waiting for 64 requests.
    slow = {"dynamic_batching": {"max_queue_delay_microseconds": 50_000, "preferred_batch_size": [64]}}
    repository = repository_with(root, {1: MODELS / "digits" / "1" / "model.onnx"}, slow)
    spec = base_spec(
        repository,
        versions={1: {"replicas": 1}},
        traffic={"weights": {1: 100}},
        resilience={
            "timeout": f"{TIMEOUT}s",
            "retries": {"attempts": 1, "per_try_timeout": "1s"},
            "connection_pool": {"max_connections": MAX_CONNECTIONS, "max_pending_requests": MAX_PENDING},
        },
    )
    stack = Stack(root, spec)
    with running(stack):
        stack.start_servers(repository, {("digits", 1): 1})
        stack.start_gateway()
        yield stack


def server_samples(stack: Stack) -> dict[tuple[str, str], float]:
    """The model server's own metric samples, by (name, le or outcome)."""
    text = httpx.get(stack.servers["digits-v1"][0].base + "/metrics", timeout=5).text
    return {
        (s.name, s.labels.get("le") or s.labels.get("outcome", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model") == "digits"
    }


def test_burst_beyond_max_pending_is_shed_fast_and_recovers(stack: Stack) -> None:
    url = stack.url + "/v2/models/digits/infer"
    burst = asyncio.run(fire(url, BURST, BURST, keep=True))
    statuses = Counter(r.status for r in burst)
    assert set(statuses) == {200, 503}, statuses  # no 504 and no transport error: nothing waited out a timeout
    assert statuses[503] >= BURST // 2, statuses
    assert statuses[200] >= 1
    shed = [r for r in burst if r.status == 503]
    assert all(r.headers.get("Retry-After") == "1" for r in shed)
    assert all(b"too many pending requests" in r.body for r in shed)
    assert all(r.headers.get("x-model-version") == "1" for r in burst)  # the refusals name the version too
    rejected = stack.metric("meshserve_gateway_rejected_total", upstream="digits-v1", reason="pending_overflow")
    assert rejected == statuses[503]
    assert stack.metric("meshserve_gateway_requests_total", upstream="digits-v1", code="504") == 0

    # The model server saw only what the pool admitted: every admitted request answered, none
    # timed out or was rejected there, and no batch (one row per request) held more than the
    # pool's connections, so the pending requests queued at the gateway, not upstream.
    seen = server_samples(stack)
    assert seen[("meshserve_inference_requests_total", "success")] == statuses[200]
    assert seen.get(("meshserve_inference_requests_total", "timeout"), 0) == 0
    assert seen.get(("meshserve_inference_requests_total", "rejected"), 0) == 0
    batches = seen[("meshserve_inference_batch_size_count", "")]
    assert seen[("meshserve_inference_batch_size_bucket", str(float(MAX_CONNECTIONS)))] == batches > 0

    after = asyncio.run(fire(url, 20, MAX_CONNECTIONS))
    assert Counter(r.status for r in after) == {200: 20}
