"""More concurrent requests than the pool admits: fast 503s, no pile-up of timeouts, full recovery."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

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


def test_burst_beyond_max_pending_is_shed_fast_and_recovers(stack: Stack) -> None:
    url = stack.url + "/v2/models/digits/infer"
    burst = asyncio.run(fire(url, BURST, BURST, keep=True))
    statuses = Counter(r.status for r in burst)
    assert set(statuses) == {200, 503}, statuses  # no 504: nothing waited for a timeout
    assert statuses[503] >= BURST // 2, statuses
    assert statuses[200] >= 1
    shed = [r for r in burst if r.status == 503]
    assert all(r.headers.get("Retry-After") == "1" for r in shed)
    assert all(b"too many pending requests" in r.body for r in shed)
    assert max(r.seconds for r in burst) < TIMEOUT  # the bound the spec sets, not a speed claim
    rejected = stack.metric("meshserve_gateway_rejected_total", upstream="digits-v1", reason="pending_overflow")
    assert rejected == statuses[503]

    after = asyncio.run(fire(url, 20, MAX_CONNECTIONS))
    assert Counter(r.status for r in after) == {200: 20}
