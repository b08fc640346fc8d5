"""Weighted split, header override and a live weight change, through the real gateway and model servers."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.services.gateway.stack import API_KEY, MODELS, Background, Stack, base_spec, fire, running
from tests.services.modelserver.serverproc import wait_for

N = 2000
SIGMAS = 4.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("split"), base_spec(MODELS))
    with running(stack):
        stack.start_servers(MODELS, {("digits", 1): 1, ("digits", 2): 1})
        stack.start_gateway()
        yield stack


def infer_url(stack: Stack) -> str:
    return stack.url + "/v2/models/digits/infer"


def test_split_90_10_within_binomial_tolerance(stack: Stack) -> None:
    results = asyncio.run(fire(infer_url(stack), N, 16))
    assert Counter(r.status for r in results) == {200: N}
    versions = Counter(r.version for r in results)
    assert set(versions) <= {"1", "2"}
    expected, sigma = N * 0.10, math.sqrt(N * 0.10 * 0.90)
    assert abs(versions["2"] - expected) <= SIGMAS * sigma, versions


@pytest.mark.parametrize(("value", "version"), [("2", "2"), ("v2", "2"), ("1", "1"), ("v1", "1")])
def test_header_override_always_reaches_the_named_version(stack: Stack, value: str, version: str) -> None:
    results = asyncio.run(fire(infer_url(stack), 100, 8, headers={"x-model-version": value}))
    assert Counter((r.status, r.version) for r in results) == {(200, version): 100}


def test_explicit_version_path_reaches_that_version(stack: Stack) -> None:
    url = stack.url + "/v2/models/digits/versions/2/infer"
    results = asyncio.run(fire(url, 50, 4))
    assert Counter((r.status, r.version) for r in results) == {(200, "2"): 50}


def test_weight_change_applies_live_without_failed_requests(stack: Stack, tmp_path: Path) -> None:
    with Background(infer_url(stack), concurrency=4) as load:
        spec = stack.spec
        spec["models"]["digits"]["traffic"]["weights"] = {1: 40, 2: 60}
        stack.write_spec(spec)
        # 200 requests: 60% +- 3.5% under the new weights, 10% +- 2% under the old ones
        wait_for_share(stack, lambda share: share > 0.4)
    assert load.results, "background load ran"
    assert load.failures() == [], Counter(r.status for r in load.failures())
    spec["models"]["digits"]["traffic"]["weights"] = {1: 90, 2: 10}
    stack.write_spec(spec)
    wait_for_share(stack, lambda share: share < 0.25)


def wait_for_share(stack: Stack, applied: Callable[[float], bool], timeout: float = 15) -> None:
    """Poll batches of 200 requests until the canary's share satisfies `applied`; all must succeed."""
    deadline = time.monotonic() + timeout
    while True:
        batch = asyncio.run(fire(infer_url(stack), 200, 8))
        assert all(r.status == 200 for r in batch)
        share = sum(r.version == "2" for r in batch) / len(batch)
        if applied(share):
            return
        assert time.monotonic() < deadline, f"new weights not applied within {timeout} s (canary share {share:.2f})"


def test_invalid_spec_is_ignored_and_the_old_one_stays(stack: Stack) -> None:
    wait_for_share(stack, lambda share: share < 0.25)  # 90/10 in force
    good = stack.spec_path.read_text()
    try:
        stack.spec_path.write_text(good.replace("1: 90", "1: 95"))  # weights sum to 105
        with Background(infer_url(stack), concurrency=2, limit=400) as load:
            pass
        assert load.failures() == []
        assert stack.gateway is not None and "is not a valid mesh spec" in _wait_log(stack, "is not a valid mesh spec")
        results = asyncio.run(fire(infer_url(stack), 400, 8))
        share = sum(r.version == "2" for r in results) / len(results)
        assert 0.0 < share < 0.25  # still 90/10 (10% +- 6 sigma), not a broken split
    finally:
        stack.write_spec()


def _wait_log(stack: Stack, text: str) -> str:
    assert stack.gateway is not None
    gateway = stack.gateway
    return str(wait_for(lambda: text in gateway.logs() and gateway.logs(), 10, f"gateway log line {text!r}"))


def test_metadata_and_readiness_follow_the_same_routing(stack: Stack) -> None:
    key = {"apikey": API_KEY}
    versioned = httpx.get(stack.url + "/v2/models/digits/versions/2", headers=key, timeout=5)
    assert versioned.status_code == 200 and versioned.headers["x-model-version"] == "2"
    assert versioned.json()["name"] == "digits"
    ready = httpx.get(stack.url + "/v2/models/digits/ready", headers={**key, "x-model-version": "1"}, timeout=5)
    assert ready.status_code == 200 and ready.headers["x-model-version"] == "1"
