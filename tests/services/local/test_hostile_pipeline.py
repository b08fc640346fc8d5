"""The business API and its stages against hostile input and a killed stage: a real local stack.

One model replica, the digits pipeline (preprocess, model, postprocess, business API) and the gateway,
started by the supervisor. Hostile input goes straight to the business API's port (what a client
inside the mesh could send); the fault test goes through the gateway under steady load.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time
from collections import Counter

import aiohttp
import httpx
import numpy as np
import orjson
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services.local.supervisor import LocalStack, free_port
from tests.services.gateway.hostile import connect, exchange, read_all, request, rss_bytes, status_of, statuses

from .conftest import MODELS, until

ROUTE = "/v1/digits:classify"
API_KEY = "hostile-pipeline-key"
ENV = {"MESHSERVE_API_KEY": API_KEY, "MESHSERVE_HTTP_HEADER_TIMEOUT": "1", "MESHSERVE_HTTP_BODY_TIMEOUT": "1"}
SPEC = f"""
repository: {MODELS}
models:
  digits:
    versions:
      1: {{replicas: 1}}
    resilience:
      timeout: 2s
      retries: {{attempts: 2, per_try_timeout: 1s}}
pipelines:
  digits-classify:
    route: {ROUTE}
    stages:
      - {{name: preprocess, kind: image-preprocess, params: {{height: 8, width: 8, channels: 1}}}}
      - {{name: predict, model: digits}}
      - {{name: postprocess, kind: classification-postprocess, params: {{top_k: 3}}}}
    resilience:
      timeout: 3s
      retries: {{attempts: 1, per_try_timeout: 2s, retry_on: [connect-failure, refused-stream]}}
      outlier_detection: {{consecutive_5xx_errors: 3, interval: 1s, base_ejection_time: 30s}}
gateway:
  consumers:
    - username: demo
      api_key: {{env: MESHSERVE_API_KEY}}
      rate_limit: {{second: 100000}}
"""
EJECTION_INTERVAL = 1.0  # the pipeline's outlier_detection.interval above
BASE_EJECTION = 30.0  # what used to be the outage: the business API's only host ejected this long


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


IMAGE = png(np.random.default_rng(0).integers(0, 255, (8, 8)))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hostile-pipeline")
    spec = root / "mesh.yaml"
    spec.write_text(SPEC)
    with LocalStack(spec, run_dir=root / "run", gateway_port=free_port(), env=ENV, grace=5) as running:
        yield running


def business(stack: LocalStack):
    return stack.instances("digits-classify")[0]


def classify(base: str, body: bytes = IMAGE, **headers: str) -> httpx.Response:
    return httpx.post(base + ROUTE, content=body, headers={"content-type": "image/png", **headers}, timeout=10)


@pytest.fixture(autouse=True)
def still_serving(stack: LocalStack):
    yield
    assert business(stack).proc.poll() is None
    assert classify(business(stack).spec.url).status_code == 200


# ------------------------------------------------------------------ hostile input at the business API


def test_business_api_caps_headers_with_431(stack: LocalStack) -> None:
    data = request("POST", ROUTE, {"content-type": "image/png", "x-big": "a" * 100_000}, IMAGE)
    response = exchange(business(stack).spec.port, data)
    assert status_of(response) == 431, response[:300]


def test_business_api_times_out_a_stalled_body_with_408(stack: LocalStack) -> None:
    with connect(business(stack).spec.port) as sock:
        sock.sendall(request("POST", ROUTE, {"content-type": "image/png", "content-length": "5000"}) + IMAGE[:10])
        response = read_all(sock, 10)
    assert status_of(response) == 408 and b"body not received in time" in response


def test_business_api_refuses_an_endless_chunked_body_with_413(stack: LocalStack) -> None:
    managed = business(stack)
    before = rss_bytes(managed.proc.pid)
    with connect(managed.spec.port) as sock:
        sock.sendall(request("POST", ROUTE, {"content-type": "image/png", "transfer-encoding": "chunked"}))
        chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
        try:
            for _ in range(1024):  # up to 64 MiB, far over the 8 MiB limit
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_all(sock, 10)
    assert status_of(response) == 413 and b"over the limit" in response, response[:300]
    assert rss_bytes(managed.proc.pid) - before < 64 * 1024 * 1024


def test_a_huge_image_is_413_naming_the_pixel_limit(stack: LocalStack) -> None:
    reply = classify(business(stack).spec.url, png(np.zeros((4096, 4096))))
    assert reply.status_code == 413, reply.text
    assert "pixels are accepted" in reply.json()["error"]


def test_pipelined_requests_and_traversal(stack: LocalStack) -> None:
    port = business(stack).spec.port
    one = request("POST", ROUTE, {"content-type": "image/png"}, IMAGE)
    lost = request("POST", "/v1/../v1/digits:classify/../../etc/passwd", {"content-type": "image/png"}, IMAGE)
    last = request("POST", ROUTE, {"content-type": "image/png", "connection": "close"}, IMAGE)
    assert statuses(exchange(port, one + lost + last)) == [200, 404, 200]


def test_meshserve_status_probes_the_gateway_on_its_status_port(stack: LocalStack) -> None:
    from services.local.status import probe, read_stack

    rows = {row["service"]: row for row in probe(read_stack(stack.run_dir)["processes"])}
    gateway = rows["gateway"]
    assert gateway["healthy"] and gateway["alive"]
    assert not gateway["health"].startswith(stack.url("gateway"))  # not the public port
    assert httpx.get(stack.url("gateway") + "/metrics").status_code == 401  # nothing public to read


# ------------------------------------------------------------------ a killed stage under load


class Load:
    """Classify requests through the gateway from a thread; each outcome with the time it was sent."""

    def __init__(self, url: str, concurrency: int = 4) -> None:
        self.url, self.concurrency = url, concurrency
        self.results: list[tuple[float, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        until(lambda: len(self.results) >= 20, 30, "load to start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        headers = {"apikey": API_KEY, "content-type": "image/png"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def worker() -> None:
                while not self._stop.is_set():
                    sent = time.monotonic()
                    try:
                        async with session.post(self.url, data=IMAGE, headers=headers) as reply:
                            self.results.append((sent, reply.status, await reply.read()))
                    except aiohttp.ClientError:
                        self.results.append((sent, 0, b""))

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def failures(self, since: float = 0.0) -> list[tuple[float, int, bytes]]:
        return [r for r in self.results if r[0] >= since and r[1] != 200]


def gateway_metric(stack: LocalStack, name: str, **labels: str) -> float:
    status_url = stack.instances("gateway")[0].spec.health_url.rsplit("/", 1)[0]
    text = httpx.get(status_url + "/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_a_killed_stage_costs_no_more_than_its_restart(stack: LocalStack) -> None:
    """preprocess SIGKILLed under load: while it is down the business API answers 503 naming the stage
    (and is not ejected for it); once the supervisor has it ready again, requests succeed within one
    ejection interval, not after the 30 s ejection of the business API's only host as before."""
    preprocess = stack.instances("digits-classify-preprocess")[0]
    restarts = preprocess.restarts
    with Load(stack.url("gateway") + ROUTE) as load:
        os.kill(preprocess.proc.pid, signal.SIGKILL)
        until(lambda: len(load.failures()) > 0, 20, "the outage to show")
        until(lambda: preprocess.restarts > restarts and preprocess.ready, 60, "the supervisor to restart preprocess")
        back = time.monotonic()
        until(lambda: len([r for r in load.results if r[0] >= back + EJECTION_INTERVAL]) >= 200, 60, "load after it")
    failures = load.failures()
    assert failures, "the kill caused no failure at all: the test did not test anything"
    statuses_seen = Counter(status for _, status, _ in failures)
    assert set(statuses_seen) <= {502, 503, 504}, statuses_seen
    named = [orjson.loads(body) for _, status, body in failures if status == 503 and body]
    assert any(answer.get("stage") == "digits-classify-preprocess" for answer in named), named[:3]
    late = load.failures(since=back + EJECTION_INTERVAL)
    assert late == [], f"{len(late)} failures after preprocess was back: {Counter(s for _, s, _ in late)}"
    assert gateway_metric(stack, "meshserve_gateway_ejections_total", upstream="digits-classify") == 0
