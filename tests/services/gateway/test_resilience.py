"""A replica SIGKILLed under load: no client-visible error, ejected, readmitted once back; a dead canary fails fast."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services.gateway.stack import (
    MODELS,
    Background,
    Stack,
    base_spec,
    fire,
    running,
    start_model_server,
    wait_model_server,
)
from tests.services.modelserver.serverproc import wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    spec = base_spec(MODELS, versions={1: {"replicas": 2}, 2: {"replicas": 1}})
    stack = Stack(tmp_path_factory.mktemp("resilience"), spec)
    with running(stack):
        stack.start_servers(MODELS, {("digits", 1): 2, ("digits", 2): 1})
        stack.start_gateway()
        yield stack


def inferences(base: str) -> float:
    """How many requests a model server has answered (its own metrics)."""
    text = httpx.get(base + "/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "meshserve_inference_requests_total"
    )


def test_killed_replica_is_ejected_and_readmitted_without_client_errors(stack: Stack) -> None:
    victim = stack.servers["digits-v1"][0]
    url = stack.url + "/v2/models/digits/infer"
    ejected = {"name": "meshserve_gateway_ejected", "upstream": "digits-v1", "host": "digits-v1-0"}
    with Background(url, concurrency=4, headers={"x-model-version": "1"}) as load:
        wait_for(lambda: inferences(victim.base) > 0, 10, "traffic on both replicas")
        victim.kill()
        wait_for(lambda: stack.metric(**ejected) == 1, 10, "the killed replica to be ejected")
        assert stack.metric("meshserve_gateway_ejections_total", upstream="digits-v1") >= 1
        before = len(load.results)
        wait_for(lambda: len(load.results) > before + 200, 20, "load to go on with one replica")

        restarted = start_model_server(MODELS, "digits", 1, stack.root, port=victim.port)
        stack.servers["digits-v1"][0] = restarted
        wait_model_server(restarted)
        wait_for(lambda: inferences(restarted.base) > 0, 20, "the restarted replica to get traffic again")
        wait_for(lambda: stack.metric(**ejected) == 0, 10, "the ejected gauge to clear")
    assert len(load.results) > 200
    assert load.failures() == [], Counter(r.status for r in load.failures())
    assert stack.metric("meshserve_gateway_retries_total", upstream="digits-v1") >= 1


def test_every_canary_replica_down_fails_fast_while_stable_is_unaffected(stack: Stack) -> None:
    url = stack.url + "/v2/models/digits/infer"
    stack.servers["digits-v2"][0].kill()
    canary = asyncio.run(fire(url, 40, 4, headers={"x-model-version": "2"}, keep=True))
    assert Counter(r.status for r in canary) == {503: 40}
    assert all(r.headers.get("Retry-After") == "1" for r in canary)
    # The gateway's own 503 (no upstream answered) names the canary it chose, so clients and
    # dashboards see which version failed; and it is the v2 error shape with a request id.
    assert all(r.version == "2" for r in canary)
    assert all(orjson.loads(r.body)["error"].startswith("digits-v2: ") for r in canary)
    assert all(r.headers.get("X-Request-ID") for r in canary)  # aiohttp spells known names its way
    # Ejected, yet still tried (panic mode: a route never has no host while one exists), so the answer
    # is the refused connection's, as fast, and the canary serves again the moment it is back.
    assert stack.metric("meshserve_gateway_ejections_total", upstream="digits-v2") >= 1
    assert all("upstream connect error" in orjson.loads(r.body)["error"] for r in canary)
    stable = asyncio.run(fire(url, 200, 8, headers={"x-model-version": "1"}))
    assert Counter((r.status, r.version) for r in stable) == {(200, "1"): 200}
    # The weighted split still sends ~10% to the dead canary: those fail fast, the rest succeed.
    mixed = asyncio.run(fire(url, 200, 8))
    assert {(r.status, r.version) for r in mixed} <= {(200, "1"), (503, "2")}
