"""Key-auth, rate limits, request ids, credential hiding, routing errors and mirroring, end to end."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.services.gateway.stack import (
    API_KEY,
    LIMITED_KEY,
    MODELS,
    ROOT,
    Stack,
    base_spec,
    digits_body,
    fire,
    repository_with,
    running,
    start_echo,
)
from tests.services.modelserver.serverproc import wait_for

ROUTE = "/v1/digits:classify"
V1 = MODELS / "digits" / "1" / "model.onnx"
BAD = ROOT / "tests" / "fixtures" / "models" / "digits_bad" / "model.onnx"
MAX_BODY = 64 * 1024  # the gateway's --max-body-bytes here: a small limit, so no test sends 64 MiB


class Blackhole:
    """A listener that reads requests and never answers (a hung mirror)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += data

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture(scope="module")
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, blackhole: Blackhole) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gateway")
    # v2 = an identical copy of v1 (always agrees), v3 = digits_bad (never agrees), v4 = a hung mirror.
    repository = repository_with(root, {1: V1, 2: V1, 3: BAD, 4: V1})
    spec = base_spec(
        repository,
        versions={v: {"replicas": 1} for v in (1, 2, 3, 4)},
        traffic={"weights": {1: 100}, "header": "x-model-version", "mirror": {"version": 2, "percentage": 100}},
    )
    # No ejection here: the hung mirror must time out on every request, not be skipped once ejected.
    spec["models"]["digits"]["resilience"]["outlier_detection"]["consecutive_5xx_errors"] = 0
    spec["pipelines"] = {
        "digits-classify": {"route": ROUTE, "stages": [{"name": "predict", "model": "digits"}]},
    }
    stack = Stack(root, spec)
    with running(stack):
        stack.servers["digits-classify"] = [start_echo(root, "business-api")]
        stack.start_servers(repository, {("digits", 1): 1, ("digits", 2): 1, ("digits", 3): 1})
        stack.start_gateway(
            extra={"digits-v4": [("digits-v4-0", blackhole.port)]}, args=["--max-body-bytes", str(MAX_BODY)]
        )
        yield stack


def post(stack: Stack, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> httpx.Response:
    return httpx.post(stack.url + path, content=digits_body() if body is None else body, headers=headers, timeout=10)


# ------------------------------------------------------------------ key-auth and rate limits


def test_missing_key_is_401(stack: Stack) -> None:
    response = post(stack, "/v2/models/digits/infer")
    assert response.status_code == 401
    assert response.json() == {"message": "No API key found in request"}
    assert response.headers["x-request-id"]
    assert "x-model-version" not in response.headers  # refused before any version was chosen
    counted = {"route": "/v2/models/digits/infer", "upstream": "", "code": "401"}
    assert stack.metric("meshserve_gateway_requests_total", **counted) >= 1
    post(stack, "/some/random/path")
    assert stack.metric("meshserve_gateway_requests_total", route="unmatched", code="401") >= 1


def test_wrong_key_is_401(stack: Stack) -> None:
    response = post(stack, "/v2/models/digits/infer", {"apikey": "not-the-key"})
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid authentication credentials"}


@pytest.mark.parametrize("where", ["apikey", "x-api-key", "query"])
def test_key_in_any_named_header_or_query_param(stack: Stack, where: str) -> None:
    if where == "query":
        response = post(stack, f"/v2/models/digits/infer?apikey={API_KEY}")
    else:
        response = post(stack, "/v2/models/digits/infer", {where: API_KEY})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1"


def test_rate_limit_answers_429_with_headers(stack: Stack) -> None:
    answers = [post(stack, "/v2/models/digits/infer", {"apikey": LIMITED_KEY}) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["x-ratelimit-remaining-hour"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
    refused = answers[5]
    assert refused.json() == {"message": "API rate limit exceeded"}
    assert "x-model-version" not in refused.headers
    assert refused.headers["x-ratelimit-limit-hour"] == "5"
    assert refused.headers["x-ratelimit-remaining-hour"] == "0"
    assert refused.headers["ratelimit-limit"] == "5"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert 1 <= int(refused.headers["ratelimit-reset"]) <= 3600
    assert stack.metric("meshserve_gateway_rate_limited_total", consumer="limited") >= 1
    assert post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}).status_code == 200  # others unaffected


# ------------------------------------------------------------------ request ids, credentials, routing


def test_request_id_is_propagated_or_generated(stack: Stack) -> None:
    given = post(stack, "/v2/models/digits/infer", {"apikey": API_KEY, "x-request-id": "req-abc-123"})
    assert given.headers["x-request-id"] == "req-abc-123"
    generated = post(stack, "/v2/models/digits/infer", {"apikey": API_KEY})
    assert len(generated.headers["x-request-id"]) == 32
    assert int(generated.headers["x-request-id"], 16) >= 0


def test_pipeline_route_hides_credentials_and_propagates_context(stack: Stack) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"apikey": API_KEY, "x-request-id": "pipe-1", "traceparent": traceparent}
    response = post(stack, ROUTE + "?apikey=" + API_KEY + "&top=3", headers, body=b"image-bytes")
    assert response.status_code == 200
    seen = response.json()
    assert seen["path"] == ROUTE
    assert "apikey" not in seen["headers"]
    assert seen["query"] == "top=3"  # every key location is removed (issue 8), the rest kept as sent
    assert seen["headers"]["x-request-id"] == "pipe-1"
    assert seen["headers"]["traceparent"] == traceparent
    assert seen["headers"]["x-consumer-username"] == "demo"
    assert seen["body_bytes"] == len(b"image-bytes")
    assert response.headers["x-model-version"] == "7"  # what the business API said
    assert response.headers["x-request-id"] == "pipe-1"

    by_query = post(stack, ROUTE + "?apikey=" + API_KEY + "&top=3", {}, body=b"x").json()
    assert by_query["query"] == "top=3"


@pytest.mark.parametrize(
    ("path", "headers", "status", "key", "text"),
    [
        ("/v2/models/nope/infer", {}, 404, "error", "unknown model 'nope'"),
        ("/v2/models/digits/infer", {"x-model-version": "v9"}, 404, "error", "has no version v9"),
        ("/v2/models/digits/versions/9/infer", {}, 404, "error", "has no version v9"),
        ("/v2/models/digits/infer", {"x-model-version": "latest"}, 400, "error", "is not a model version"),
        ("/v1/unknown", {}, 404, "message", "no Route matched"),
    ],
)
def test_routing_errors_are_clear_4xx(
    stack: Stack, path: str, headers: dict[str, str], status: int, key: str, text: str
) -> None:
    response = post(stack, path, {"apikey": API_KEY, **headers})
    assert response.status_code == status
    assert text in response.json()[key]
    assert response.headers["x-request-id"]
    assert "x-model-version" not in response.headers  # no version was chosen


# ------------------------------------------------------------------ body limit


def chunks(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    """A body httpx sends with Transfer-Encoding: chunked (no Content-Length)."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


@pytest.mark.parametrize(
    ("path", "key", "version"),
    [("/v2/models/digits/infer", "error", "1"), (ROUTE, "message", None)],
)
def test_chunked_body_over_the_limit_is_413(stack: Stack, path: str, key: str, version: str | None) -> None:
    route = "/v2/models/digits/infer" if version else ROUTE
    before = stack.metric("meshserve_gateway_requests_total", route=route, code="413")
    request = httpx.Request("POST", stack.url + path, content=chunks(2 * MAX_BODY), headers={"apikey": API_KEY})
    assert request.headers["transfer-encoding"] == "chunked" and "content-length" not in request.headers
    with httpx.Client(timeout=10) as client:
        response = client.send(request)
    assert response.status_code == 413, response.text
    assert response.json() == {key: f"request body is over the gateway's limit of {MAX_BODY} bytes"}
    assert response.headers["x-request-id"]
    assert response.headers.get("x-model-version") == version  # the chosen version, where there is one
    assert stack.metric("meshserve_gateway_requests_total", route=route, code="413") == before + 1


def test_declared_body_over_the_limit_is_413_before_reading(stack: Stack) -> None:
    response = post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}, body=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    expected = f"request body of {MAX_BODY + 1} bytes is over the gateway's limit of {MAX_BODY}"
    assert response.json() == {"error": expected}
    assert response.headers["x-model-version"] == "1"


def test_chunked_body_within_the_limit_goes_upstream_whole(stack: Stack) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.post(stack.url + ROUTE, content=chunks(MAX_BODY, 5000), headers={"apikey": API_KEY})
    assert response.status_code == 200, response.text
    assert response.json()["body_bytes"] == MAX_BODY  # exactly the limit is allowed, every chunk forwarded


def test_health_and_metrics_are_on_the_status_port_only(stack: Stack) -> None:
    assert httpx.get(stack.status + "/healthz").json() == {"status": "alive"}
    assert httpx.get(stack.status + "/ready").json() == {"status": "ready"}
    assert "meshserve_gateway_requests_total" in httpx.get(stack.status + "/metrics").text
    # The public port lists no consumers or upstream instances to anyone: it is routes only.
    for path in ("/metrics", "/healthz"):
        public = httpx.get(stack.url + path)
        assert public.status_code == 401, public.text
        assert "meshserve_gateway" not in public.text
        keyed = httpx.get(stack.url + path, headers={"apikey": API_KEY})
        assert keyed.status_code == 404 and "meshserve_gateway" not in keyed.text


# ------------------------------------------------------------------ mirroring


def agreement(stack: Stack, mirror: str, agree: str) -> float:
    return stack.metric(
        "meshserve_gateway_mirror_agreement_total", model="digits", primary="1", mirror=mirror, agree=agree
    )


def set_mirror(stack: Stack, version: int, percentage: float = 100) -> None:
    spec = stack.spec
    spec["models"]["digits"]["traffic"]["mirror"] = {"version": version, "percentage": percentage}
    stack.write_spec(spec)


def test_mirror_leaves_the_callers_answer_unchanged(stack: Stack) -> None:
    direct = stack.servers["digits-v1"][0].base + "/v2/models/digits/infer"
    for seed in range(5):
        body = digits_body(rows=3, seed=seed)
        expected = httpx.post(direct, content=body, timeout=10)
        through = post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}, body=body)
        assert through.status_code == expected.status_code == 200
        assert through.content == expected.content
    bad = post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}, body=b'{"inputs": 5}')
    assert bad.status_code == httpx.post(direct, content=b'{"inputs": 5}').status_code == 400


def test_mirror_agreement_is_counted_per_row(stack: Stack) -> None:
    set_mirror(stack, 2)
    rows, requests = 4, 30
    before_true, before_false = agreement(stack, "2", "true"), agreement(stack, "2", "false")
    for seed in range(requests):
        assert post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}, digits_body(rows, seed)).status_code == 200
    wait_for(lambda: agreement(stack, "2", "true") == before_true + rows * requests, 10, "identical mirror agrees")
    assert agreement(stack, "2", "false") == before_false

    set_mirror(stack, 3)  # digits_bad: logits rotated by one class, never the same top-1
    body = digits_body(rows, 99)

    def bad_mirror_counted() -> bool:
        assert post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}, body).status_code == 200
        return agreement(stack, "3", "false") > 0

    wait_for(bad_mirror_counted, 10, "the mirror change to v3 to apply")
    base = agreement(stack, "3", "false")
    for seed in range(requests):
        assert post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}, digits_body(rows, seed)).status_code == 200
    wait_for(lambda: agreement(stack, "3", "false") == base + rows * requests, 10, "bad mirror disagrees")
    assert agreement(stack, "3", "true") == 0


def test_mirror_agreement_reads_binary_responses(stack: Stack) -> None:
    set_mirror(stack, 2)
    wait_mirrored_to(stack, "2")
    client = triton.InferenceServerClient(stack.url.removeprefix("http://"))
    pixels = np.random.default_rng(7).integers(0, 17, size=(5, 1, 8, 8)).astype(np.float32) / 16
    tensor = triton.InferInput("input", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    before = agreement(stack, "2", "true")
    result = client.infer("digits", [tensor], headers={"apikey": API_KEY})
    direct = triton.InferenceServerClient(stack.servers["digits-v1"][0].base.removeprefix("http://"))
    expected = direct.infer("digits", [tensor]).as_numpy("logits")
    np.testing.assert_array_equal(result.as_numpy("logits"), expected)
    wait_for(lambda: agreement(stack, "2", "true") == before + 5, 10, "binary rows compared")


def wait_mirrored_to(stack: Stack, version: str) -> None:
    """Send requests until one has been mirrored to `version` (the spec change is in force)."""
    before = stack.metric("meshserve_gateway_mirror_requests_total", version=version)

    def mirrored() -> bool:
        assert post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}).status_code == 200
        return stack.metric("meshserve_gateway_mirror_requests_total", version=version) > before

    wait_for(mirrored, 10, f"mirroring to v{version}")


def test_hung_mirror_never_delays_the_caller(stack: Stack, blackhole: Blackhole) -> None:
    set_mirror(stack, 4)

    def reached() -> bool:
        assert post(stack, "/v2/models/digits/infer", {"apikey": API_KEY}).status_code == 200
        return b"POST /v2/models/digits/infer" in blackhole.received

    wait_for(reached, 10, "the mirror change to v4 to apply")
    sent = len(set(re.findall(rb"x-request-id: (\S+)", blackhole.received, re.IGNORECASE)))  # tries repeat ids

    def settled() -> bool:  # every mirror sent so far has timed out and been counted
        return stack.metric("meshserve_gateway_mirror_requests_total", version="4", outcome="error") >= sent

    wait_for(settled, 15, "earlier mirrors to time out")
    errors = stack.metric("meshserve_gateway_mirror_requests_total", version="4", outcome="error")
    answer = post(stack, "/v2/models/digits/infer", {"apikey": API_KEY, "x-request-id": "hung-mirror-1"})
    # The caller has its answer while the mirror of the same request is still unanswered.
    assert answer.status_code == 200
    assert stack.metric("meshserve_gateway_mirror_requests_total", version="4", outcome="error") == errors
    wait_for(lambda: b"hung-mirror-1" in blackhole.received, 5, "the mirror to be sent")
    wait_for(lambda: stack.metric("meshserve_gateway_mirror_requests_total", version="4", outcome="error") > errors, 15)
    set_mirror(stack, 2)


def test_burst_with_mirror_all_succeed(stack: Stack) -> None:
    set_mirror(stack, 2)
    results = asyncio.run(fire(stack.url + "/v2/models/digits/infer", 300, 16))
    assert {r.status for r in results} == {200}
