"""The gateway against hostile input (a real gateway process in front of real upstream processes).

Each case expects a 4xx that names the problem (or a closed connection where nobody can be answered),
within a bounded time, with the gateway's memory bounded, every other client still served and the
process alive. The gateway runs with 1-second header and body timeouts so that the slow cases end soon.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.services.gateway.hostile import (
    connect,
    exchange,
    read_all,
    request,
    rss_bytes,
    status_of,
    statuses,
    wait_closed,
)
from tests.services.gateway.stack import (
    API_KEY,
    KEY_ENV,
    MODELS,
    Proc,
    Stack,
    _spawn,
    _wait_ready,
    base_spec,
    running,
    start_echo,
)
from tests.services.modelserver.serverproc import free_port, wait_for

ECHO = "/v1/echo:run"
HOP = "/hop"
TIMEOUTS = {"MESHSERVE_HTTP_HEADER_TIMEOUT": "1", "MESHSERVE_HTTP_BODY_TIMEOUT": "1"}
MAX_BODY = 64 * 1024


def _spec() -> dict:
    spec = base_spec(MODELS, versions={1: {"replicas": 1}}, traffic={"weights": {1: 100}})
    stage = [{"name": "predict", "model": "digits"}]
    spec["pipelines"] = {
        "echo": {"route": ECHO, "stages": stage},
        "hop": {"route": HOP, "stages": stage},
    }
    return spec


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("hostile")
    stack = Stack(root, _spec())
    with running(stack):
        echo = start_echo(root, "echo")
        stack.servers["echo"] = [echo]
        stack.servers["hop"] = [echo]
        stack.start_gateway(args=["--max-body-bytes", str(MAX_BODY)], env=TIMEOUTS)
        yield stack


@pytest.fixture(autouse=True)
def still_serving(stack: Stack) -> Iterator[None]:
    """After every case: the gateway is alive and answers a well-formed request."""
    yield
    assert stack.gateway is not None and stack.gateway.proc.poll() is None, stack.gateway.logs()[-3000:]
    assert ok(stack).status_code == 200


def ok(stack: Stack) -> httpx.Response:
    return httpx.post(stack.url + ECHO, content=b"{}", headers={"apikey": API_KEY}, timeout=10)


def port(stack: Stack) -> int:
    assert stack.gateway is not None
    return stack.gateway.port


def upstream_saw(response: bytes) -> dict:
    assert status_of(response) == 200, response[:500]
    return orjson.loads(response.split(b"\r\n\r\n", 1)[1])


# ------------------------------------------------------------------ headers: size, count, time


def test_oversize_header_is_431_naming_the_limit(stack: Stack) -> None:
    response = exchange(port(stack), request("POST", ECHO, {"apikey": API_KEY, "x-big": "a" * 100_000}))
    assert status_of(response) == 431, response[:300]
    assert b"61440 bytes" in response


def test_too_many_headers_is_431(stack: Stack) -> None:
    headers = [("apikey", API_KEY)] + [(f"x-h{i}", "1") for i in range(150)]
    response = exchange(port(stack), request("POST", ECHO, headers))
    assert status_of(response) == 431 and b"100 fields" in response


def test_endless_header_is_cut_off_with_memory_bounded(stack: Stack) -> None:
    """150 MB of header would have been held whole; the gateway stops reading after the cap."""
    assert stack.gateway is not None
    before = rss_bytes(stack.gateway.proc.pid)
    sent = 0
    with connect(port(stack)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-endless: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(8 * 1024):  # up to 64 MiB
                sock.sendall(b"a" * 8192)
                sent += 8192
        response = read_all(sock, 2)
    assert sent < 16 * 1024 * 1024, "the gateway kept reading an endless header"
    assert response == b"" or status_of(response) == 431
    assert rss_bytes(stack.gateway.proc.pid) - before < 32 * 1024 * 1024


def test_a_header_that_never_ends_times_out_with_408(stack: Stack) -> None:
    with connect(port(stack)) as sock:
        sock.sendall(b"POST /v1/echo:run HTTP/1.1\r\nhost: x\r\napikey: ")
        response = read_all(sock, 10)
    assert status_of(response) == 408 and b"headers not received in time" in response


def test_a_body_that_stops_arriving_times_out_with_408(stack: Stack) -> None:
    with connect(port(stack)) as sock:
        sock.sendall(request("POST", ECHO, {"apikey": API_KEY, "content-length": "1000"}) + b"x" * 10)
        response = read_all(sock, 10)
    assert status_of(response) == 408 and b"body not received in time" in response


def test_a_slow_but_steady_body_is_not_timed_out(stack: Stack) -> None:
    """The body timeout is the longest silence between reads (nginx's client_body_timeout), not a total."""
    with connect(port(stack)) as sock:
        sock.sendall(request("POST", ECHO, {"apikey": API_KEY, "content-length": "8", "connection": "close"}))
        for _ in range(8):  # 8 bytes over ~2.4 s, more than twice the 1 s timeout
            time.sleep(0.3)
            sock.sendall(b" ")
        response = read_all(sock, 10)
    assert upstream_saw(response)["body_bytes"] == 8


def test_3000_half_sent_requests_are_timed_out_with_memory_bounded(stack: Stack) -> None:
    assert stack.gateway is not None
    pid = stack.gateway.proc.pid
    before = rss_bytes(pid)
    socks: list[socket.socket] = []
    try:
        for i in range(3000):
            sock = connect(port(stack))
            # a third never send a byte, a third stop inside the head, a third inside the body
            if i % 3 == 1:
                sock.sendall(b"POST /v1/echo:run HTTP/1.1\r\nhost: x\r\nx-slow: ")
            elif i % 3 == 2:
                sock.sendall(request("POST", ECHO, {"apikey": API_KEY, "content-length": "100"}) + b"x")
            socks.append(sock)
        assert ok(stack).status_code == 200  # everyone else is served meanwhile
        grown = rss_bytes(pid) - before
        outcome = wait_closed(socks, 30)
    finally:
        for sock in socks:
            sock.close()
    assert outcome["still_open"] == 0, outcome
    assert outcome["other"] == 0, outcome
    assert outcome["408"] >= 2000, outcome  # the ones that began a request are told why
    assert grown < 100 * 1024 * 1024, f"3,000 idle connections cost {grown / 2**20:.0f} MiB"


# ------------------------------------------------------------------ bodies


def test_oversize_declared_body_is_413_without_reading_it(stack: Stack) -> None:
    data = request("POST", ECHO, {"apikey": API_KEY, "content-length": str(10**12)})
    response = exchange(port(stack), data)
    assert status_of(response) == 413 and b"over the gateway's limit" in response


def test_endless_chunked_body_is_413(stack: Stack) -> None:
    head = request("POST", ECHO, {"apikey": API_KEY, "transfer-encoding": "chunked"})
    with connect(port(stack)) as sock:
        sock.sendall(head)
        chunk = b"2000\r\n" + b"a" * 0x2000 + b"\r\n"
        try:
            for _ in range(1024):  # 8 MiB, far over the 64 KiB limit
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_all(sock, 5)
    assert status_of(response) == 413, response[:300]


def test_pipelined_requests_are_answered_in_order(stack: Stack) -> None:
    one = request("POST", ECHO, {"apikey": API_KEY}, b"{}")
    last = request("POST", ECHO, {"apikey": API_KEY, "connection": "close"}, b"{}")
    response = exchange(port(stack), one + request("POST", ECHO, {}, b"{}") + last)
    assert statuses(response) == [200, 401, 200]


def test_smuggling_with_both_lengths_is_refused(stack: Stack) -> None:
    data = request("POST", ECHO, {"apikey": API_KEY, "content-length": "4", "transfer-encoding": "chunked"})
    response = exchange(port(stack), data + b"0\r\n\r\nGET /x HTTP/1.1\r\n\r\n")
    assert status_of(response) == 400


# ------------------------------------------------------------------ credentials, trailers, hop-by-hop


def test_every_key_location_is_stripped_upstream(stack: Stack) -> None:
    headers = {"apikey": API_KEY, "x-api-key": API_KEY, "x-other": "kept"}
    target = f"{ECHO}?apikey={API_KEY}&a=1&X-API-KEY={API_KEY}&b=two%20words"
    seen = upstream_saw(exchange(port(stack), request("POST", target, {**headers, "connection": "close"}, b"{}")))
    assert "apikey" not in seen["headers"] and "x-api-key" not in seen["headers"]
    assert API_KEY not in orjson.dumps(seen).decode()
    assert seen["query"] == "a=1&b=two%20words"  # the rest as the client sent it
    assert seen["headers"]["x-other"] == "kept"


def test_key_in_the_query_only_is_stripped_too(stack: Stack) -> None:
    seen = upstream_saw(exchange(port(stack), request("POST", f"{ECHO}?x=1&apikey={API_KEY}", {"connection": "close"})))
    assert seen["query"] == "x=1"


def test_a_key_sent_only_as_a_trailer_is_not_accepted(stack: Stack) -> None:
    head = request("POST", ECHO, {"transfer-encoding": "chunked", "trailer": "apikey", "connection": "close"})
    response = exchange(port(stack), head + b"2\r\n{}\r\n0\r\napikey: " + API_KEY.encode() + b"\r\n\r\n")
    assert status_of(response) == 401, response[:300]


def test_trailers_are_not_forwarded(stack: Stack) -> None:
    head = request("POST", ECHO, {"apikey": API_KEY, "transfer-encoding": "chunked", "connection": "close"})
    seen = upstream_saw(exchange(port(stack), head + b"2\r\n{}\r\n0\r\nx-trailer-secret: 1\r\n\r\n"))
    assert "x-trailer-secret" not in seen["headers"]
    assert seen["body_bytes"] == 2


def test_hop_by_hop_headers_are_not_forwarded(stack: Stack) -> None:
    headers = {
        "apikey": API_KEY,
        "connection": "close, x-private-hop",
        "x-private-hop": "secret",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "proxy-authorization": "Basic Zm9vOmJhcg==",
        "proxy-connection": "keep-alive",
        "upgrade": "h2c",
        "trailer": "x-t",
        "x-end-to-end": "kept",
    }
    seen = upstream_saw(exchange(port(stack), request("POST", ECHO, headers, b"{}")))
    forwarded = set(seen["headers"])
    dropped = {"connection", "x-private-hop", "keep-alive", "te", "proxy-authorization", "proxy-connection"}
    assert not forwarded & (dropped | {"upgrade", "trailer"}), forwarded
    assert seen["headers"]["x-end-to-end"] == "kept"


def test_hop_by_hop_headers_of_the_answer_are_not_passed_back(stack: Stack) -> None:
    response = httpx.post(stack.url + HOP, content=b"{}", headers={"apikey": API_KEY})
    assert response.status_code == 200
    for name in ("x-upstream-private", "keep-alive", "proxy-authenticate", "trailer"):
        assert name not in response.headers, name


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    "target",
    [
        "/v1/echo:run/../../etc/passwd",
        "/v1/%2e%2e/%2e%2e/etc/passwd",
        "/v2/models/../../etc/passwd/infer",
        "/v2/models/%2e%2e%2fetc/infer",
        "/v2/models/digits/versions/..%2f..%2f1/infer",
        "//v1/echo:run",
    ],
)
def test_traversal_in_paths_matches_no_route(stack: Stack, target: str) -> None:
    response = exchange(port(stack), request("POST", target, {"apikey": API_KEY, "connection": "close"}, b"{}"))
    assert status_of(response) in (400, 404), response[:300]


def test_a_version_of_5000_digits_is_400_naming_the_problem(stack: Stack) -> None:
    target = "/v2/models/digits/versions/" + "9" * 5000 + "/infer"
    response = httpx.post(stack.url + target, content=b"{}", headers={"apikey": API_KEY})
    assert response.status_code == 400, response.text
    assert "is not a model version" in response.json()["error"] and len(response.text) < 500


# ------------------------------------------------------------------ shutdown with a slow sender


def test_shutdown_is_not_held_by_a_slow_sender(stack: Stack) -> None:
    """A second gateway with a 2 s drain limit and long read timeouts: SIGTERM with a request whose body
    trickles in exits 0 within the limit (it used to wait for the sender, until SIGKILL)."""
    gateway_port, status_port = free_port(), free_port()
    env = {**KEY_ENV, "MESHSERVE_DISCOVERY": f"static:{stack.endpoints_path}", "MESHSERVE_HTTP_BODY_TIMEOUT": "600"}
    args = [sys.executable, "-m", "services.gateway", "--spec", str(stack.spec_path), "--port", str(gateway_port),
            "--status-port", str(status_port), "--drain-limit", "2"]  # fmt: skip
    proc = _spawn(args, gateway_port, stack.root / f"gateway-drain-{gateway_port}.log", env)
    try:
        _wait_ready(Proc(proc.proc, status_port, proc.log), "/ready", 30)
        stop = threading.Event()
        with connect(gateway_port) as slow:
            slow.sendall(request("POST", ECHO, {"apikey": API_KEY, "content-length": "100000"}))

            def trickle() -> None:
                while not stop.wait(0.2):
                    try:
                        slow.sendall(b"x")
                    except OSError:
                        return

            threading.Thread(target=trickle, daemon=True).start()
            wait_for(lambda: httpx.get(f"http://127.0.0.1:{status_port}/ready").status_code == 200, 5, "ready")
            proc.proc.send_signal(signal.SIGTERM)
            # The drain limit (2 s) plus start-up slack; without the limit it waited for the sender (~5.5 h).
            wait_for(lambda: proc.proc.poll() is not None, 2 + 8, "the gateway to exit after SIGTERM")
            stop.set()
        assert proc.proc.returncode == 0, proc.logs()[-2000:]
    finally:
        proc.kill()
