"""Hostile input against a real `meshserve serve` process (issue 8): every case gets a 4xx that names
the problem, the process stays alive, and another client is served right after. Then the heavier
cases: a tensor past simdjson's 2^24 - 1 count, a large decode that must not block small requests,
the memory a 48 MB body may cost, and a slow sender at shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import psutil
import pytest
import tritonclient.http as httpclient

from services.modelserver.decodepool import DECODE_MEMORY_FACTOR, OFFLOAD_BYTES
from services.modelserver.jsonload import SATURATED
from tests.services.modelserver.conftest import Repo
from tests.services.modelserver.serverproc import Server, run_server, wait_for

INFER = "/v2/models/affine/infer"
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def hostile(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared repository behind the default body limit (64 MiB), as deployed."""
    with run_server(repo.root, "--poll-interval", "0", log_dir=tmp_path_factory.mktemp("hostile")) as server:
        yield server


def served_after(server: Server) -> None:
    """The process is alive and another client gets a correct answer."""
    assert server.proc.poll() is None, server.logs()[-3000:]
    response = httpx.post(server.base + INFER, json=GOOD, timeout=30)
    assert response.status_code == 200, response.text


def tensor(**overrides: object) -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4], **overrides}]}


def binary(header: dict, payload: bytes, claimed: object = None) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()  # the stdlib writes integers of any size
    return head + payload, {"Inference-Header-Content-Length": str(len(head) if claimed is None else claimed)}


def bin_x(size: object, shape: list | None = None) -> dict:
    x = {"name": "x", "datatype": "FP32", "shape": shape or [1, 4], "parameters": {"binary_data_size": size}}
    return {"inputs": [x]}


_DEEP = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
_DEEP_DATA = (
    b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":' + b"[" * 70 + b"1,2,3,4" + b"]" * 70 + b"}]}"
)

CASES = [
    # (id, path, body, headers, status, message substring)
    ("malformed-json", INFER, b'{"inputs": [{"name": "x",', {}, 400, "malformed JSON"),
    ("trailing-garbage", INFER, orjson.dumps(GOOD) + b"}}}", {}, 400, "malformed JSON"),
    ("deeply-nested-json", INFER, _DEEP, {}, 400, "malformed JSON"),
    ("deeply-nested-data", INFER, _DEEP_DATA, {}, 400, "'x'"),
    ("nan-literal", INFER, b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[NaN,1,2,3]}]}', {}, 400,
     "malformed JSON"),
    ("nan-string", INFER, orjson.dumps(tensor(data=["NaN", 1, 2, 3])), {}, 400, "binary tensor extension"),
    ("infinite-json-number", INFER, b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1e999,1,2,3]}]}',
     {}, 400, "malformed JSON"),
    ("fp32-overflow", INFER, orjson.dumps(tensor(data=[1e300, 1, 2, 3])), {}, 400, "binary tensor extension"),
    ("shape-2^24", INFER, orjson.dumps(tensor(shape=[1, 2**24])), {}, 400, "'x': shape [1, 16777216] does not match"),
    ("count-2^24-declared", "/v2/models/varwidth/infer",
     orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2**24], "data": [0]}]}), {}, 400,
     "needs 16777216 elements, a JSON body of"),
    ("count-2^31-declared", "/v2/models/varwidth/infer",
     orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2**30], "data": [0]}]}), {}, 400,
     "needs 2147483648 elements"),
    ("count-over-int64", "/v2/models/varwidth/infer",
     orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [8, 2**62], "data": [0]}]}), {}, 400,
     f"needs {8 * 2**62} elements"),
    ("dim-of-40-digits", INFER,
     b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,' + b"9" * 40 + b'],"data":[0]}]}', {}, 400,
     "shape must be a list of non-negative integers"),
    ("binary-count-2^31", "/v2/models/varwidth/infer", *binary(bin_x(16, [2, 2**30]), b"\0" * 16), 400,
     "binary_data_size is 16 bytes, 2147483648 FP32 elements need 8589934592"),
    ("binary-count-over-int64", "/v2/models/plain/infer", *binary(bin_x(16, [2**62, 4]), b"\0" * 16), 400,
     f"{2**64} FP32 elements need {2**66}"),
    ("dims-over-int64", "/v2/models/plain/infer", *binary(bin_x(16, [2**64, 4]), b"\0" * 16), 400,
     "shape must be a list of non-negative integers"),
    ("wrong-datatype", INFER, orjson.dumps(tensor(datatype="INT64")), {}, 400, "datatype 'INT64' does not match"),
    ("datatype-not-string", INFER, orjson.dumps(tensor(datatype=5)), {}, 400, "datatype 5 does not match"),
    ("strings-for-floats", INFER, orjson.dumps(tensor(data=["a", "b", "c", "d"])), {}, 400, "must be numbers"),
    ("header-length-past-body", INFER, *binary(bin_x(16), b"\0" * 16, claimed=10**12), 400,
     "Inference-Header-Content-Length is 1000000000000 but the body has only"),
    ("header-length-negative", INFER, *binary(bin_x(16), b"\0" * 16, claimed=-5), 400,
     "Inference-Header-Content-Length is -5"),
    ("header-length-huge-digits", INFER, *binary(bin_x(16), b"\0" * 16, claimed="9" * 5000), 400,
     "Inference-Header-Content-Length"),
    ("binary-size-past-body", INFER, *binary(bin_x(2**40), b"\0" * 16), 400,
     "binary_data_size 1099511627776 runs past"),
    ("binary-size-negative", INFER, *binary(bin_x(-16), b"\0" * 16), 400, "binary_data_size must be a non-negative"),
    ("binary-size-float", INFER, *binary(bin_x(16.0), b"\0" * 16), 400, "binary_data_size must be a non-negative"),
    ("binary-size-short", INFER, *binary(bin_x(8), b"\0" * 8), 400, "binary_data_size is 8 bytes"),
    ("version-5000-digits", "/v2/models/affine/versions/" + "9" * 5000 + "/infer", orjson.dumps(GOOD), {}, 404,
     "versions are whole numbers"),
    ("traversal-model", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", orjson.dumps(GOOD), {}, 404, "no such endpoint"),
    ("traversal-encoded-dots", "/v2/models/%2E%2E/infer", orjson.dumps(GOOD), {}, 404, "unknown model '..'"),
    ("traversal-load", "/v2/repository/models/..%2Faffine/load", b"", {}, 404, "Not Found"),
    ("dotdot-load", "/v2/repository/models/%2E%2E/load", b"", {}, 400, "invalid model name"),
    ("dot-load", "/v2/repository/models/.hidden/load", b"", {}, 400, "invalid model name"),
    ("oversize-declared", INFER, b"", {"Content-Length": str(2**40)}, 413, "over the limit"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_request_is_a_clear_4xx(
    hostile: Server, path: str, body: bytes, headers: dict, status: int, message: str
) -> None:
    if "Content-Length" in headers:  # a lie about the length: raw socket, httpx would send the real one
        answer = raw_exchange(hostile, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {headers['Content-Length']}"
                              "\r\n\r\n".encode())  # fmt: skip
        assert answer.startswith(f"HTTP/1.1 {status}".encode()) and message.encode() in answer, answer
    else:
        response = httpx.post(hostile.base + path, content=body, headers=headers, timeout=60)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
        assert len(response.content) < 2000, "errors quote what was wrong, not the whole input"
    served_after(hostile)


def raw_exchange(server: Server, data: bytes, until: bytes = b"\r\n\r\n") -> bytes:
    """Send bytes as they are and read until the answer's body is in (or the server closes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
            head, _, body = received.partition(until)
            if _ and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    return received


def test_endless_chunked_body_is_413(hostile: Server) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        while sent < 4 * 64 * 1024 * 1024:  # the test's own stop, far past the limit
            sent += 1 << 20
            yield b" " * (1 << 20)

    response = httpx.post(hostile.base + INFER, content=endless(), timeout=60)
    assert response.status_code == 413 and "larger than the limit" in response.json()["error"]
    served_after(hostile)


def test_pipelined_requests_are_answered_in_order(hostile: Server) -> None:
    good = orjson.dumps(GOOD)
    bad = orjson.dumps(tensor(datatype="INT8"))
    requests = b"".join(
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        for body in (good, bad, good)
    )
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=30) as sock:
        sock.sendall(requests)
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    statuses = [int(part.split(b" ", 1)[0]) for part in received.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 400, 200]
    served_after(hostile)


_NUMERIC = [(name, np.dtype(code)) for name, code in (
    ("BOOL", "?"), ("INT8", "i1"), ("INT16", "i2"), ("INT32", "i4"), ("INT64", "i8"), ("UINT8", "u1"), ("UINT16", "u2"),
    ("UINT32", "u4"), ("UINT64", "u8"), ("FP16", "f2"), ("FP32", "f4"), ("FP64", "f8"))]  # fmt: skip


def _ident_inputs(fp32: np.ndarray) -> list[httpclient.InferInput]:
    """ident takes one input per datatype: FP32 carries the values under test, the others zeros."""
    inputs = []
    for datatype, dtype in _NUMERIC:
        tensor_in = httpclient.InferInput(f"IN_{datatype}", [1, 3], datatype)
        tensor_in.set_data_from_numpy(fp32 if datatype == "FP32" else np.zeros((1, 3), dtype), binary_data=True)
        inputs.append(tensor_in)
    strings = httpclient.InferInput("IN_BYTES", [1, 3], "BYTES")
    strings.set_data_from_numpy(np.array([[b"a"] * 3], object), binary_data=True)
    return [*inputs, strings]


def test_nan_and_infinity_go_binary_in_and_come_back_in_either_encoding(hostile: Server) -> None:
    """Binary tensors carry NaN/Inf as IEEE values; a JSON answer spells them "NaN"/"Infinity" (not
    null), which tritonclient's as_numpy() reads back as the same floats; a binary answer as they are."""
    client = httpclient.InferenceServerClient(hostile.url)
    x = np.array([[np.nan, np.inf, -np.inf]], np.float32)
    for binary_out in (False, True):
        wanted = [httpclient.InferRequestedOutput("OUT_FP32", binary_data=binary_out)]
        result = client.infer("ident", _ident_inputs(x), outputs=wanted)
        np.testing.assert_array_equal(result.as_numpy("OUT_FP32"), x)
        if not binary_out:
            assert result.get_output("OUT_FP32")["data"] == ["NaN", "Infinity", "-Infinity"]
    served_after(hostile)


# ------------------------------------------------------------ heavy cases


def decoder_pid(server: Server) -> int:
    """The decode worker: the spawned child that is not multiprocessing's resource tracker. psutil, not
    /proc by hand: a thread or a child may end between listing and reading (a race seen in a run)."""

    def find() -> int | None:
        for child in psutil.Process(server.proc.pid).children():
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.Error:  # gone (or a zombie) meanwhile
                continue
            if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
                return child.pid
        return None

    return wait_for(find, 60, "the decoder process")


def test_data_past_2_to_the_24_elements_is_refused_and_the_server_lives(hostile: Server) -> None:
    """The query of death of issue 8: a JSON array of more than 16,777,215 numbers (a 34 MB body)."""
    count = SATURATED + 1_000
    data = b"[" + b"0," * (count - 1) + b"0]"
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":' + data + b"}]}"
    response = httpx.post(hostile.base + INFER, content=body, timeout=300)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == f"input 'x': data has {count} elements, the shape needs 4"
    served_after(hostile)


def test_a_large_decode_does_not_block_small_requests(hostile: Server) -> None:
    """While a large body sits in the decoder (stopped with SIGSTOP: an event, not a clock), small
    requests are answered; once it continues, the large one is answered too."""
    pid = decoder_pid(hostile)
    rows = OFFLOAD_BYTES // 24 + 1  # "0.125," is 6 bytes a number, 4 numbers a row
    x = np.full((rows, 4), 0.125, np.float32)
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": x.reshape(-1)}]},
                        option=orjson.OPT_SERIALIZE_NUMPY)  # fmt: skip
    assert len(body) >= OFFLOAD_BYTES
    result: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: result.append(httpx.post(hostile.base + "/v2/models/plain/infer", content=body, timeout=300)),
        daemon=True,
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _state(pid) == "T", what="decoder stopped")
        sender.start()
        wait_for(lambda: hostile.metric("meshserve_inference_large_decodes") == 1, 120, "the body at the decoder")
        for _ in range(10):
            served_after(hostile)
        assert not result, "the large request cannot have been answered: its decoder is stopped"
    finally:
        os.kill(pid, signal.SIGCONT)
    sender.join(300)
    assert result and result[0].status_code == 200, result
    assert np.asarray(result[0].json()["outputs"][0]["data"]).size == rows * 3


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def test_memory_of_a_48mb_body_of_pairs_stays_within_the_documented_multiple(hostile: Server) -> None:
    """Issue 8's 48 MB body of [0,0] pairs took a server from 101 MB to 1.6 GB. Peak memory of the
    server and its decoder (VmHWM, reset first) may grow by DECODE_MEMORY_FACTOR bodies at most."""
    pids = [hostile.proc.pid, decoder_pid(hostile)]
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = {pid: _kib(pid, "VmRSS") for pid in pids}
    pairs = 8_000_000
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[' + b"[0,0]," * (pairs - 1) + b"[0,0]]}]}"
    response = httpx.post(hostile.base + INFER, content=body, timeout=600)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == f"input 'x': data has {2 * pairs} elements, the shape needs 4"
    grown = sum(_kib(pid, "VmHWM") - before[pid] for pid in pids) * 1024
    print(f"48 MB body of pairs: peak memory grew by {grown / 2**20:.0f} MiB, {grown / len(body):.1f}x the body")
    assert grown <= DECODE_MEMORY_FACTOR * len(body), f"grew by {grown / len(body):.1f} times the body"
    served_after(hostile)


def test_a_slow_sender_does_not_hold_the_shutdown(repo: Repo, tmp_path: Path) -> None:
    """Issue 8: the server counted a request as in flight before its body arrived, so a client that
    never finishes its body held `--drain-limit` (and then uvicorn's own graceful timeout). With a
    limit of 120 s, the process must be gone well within the test's 60 s."""
    args = ("--poll-interval", "0", "--drain-limit", "120")
    with (
        run_server(repo.root, *args, log_dir=tmp_path) as server,
        socket.create_connection(("127.0.0.1", server.port)) as slow,
    ):
        slow.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"inputs"')
        served_after(server)  # the loop has moved past the slow request's headers
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
    logs = server.logs()
    assert "drained; shutting down" in logs and "drain limit reached" not in logs


def test_the_decoder_process_follows_a_killed_server_out(repo: Repo, tmp_path: Path) -> None:
    """A SIGKILLed server (OOM kill, supervisor restart) must not leave its decoder behind."""
    with run_server(repo.root, "--poll-interval", "0", log_dir=tmp_path) as server:
        pid = decoder_pid(server)
        server.proc.kill()
        server.proc.wait(30)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _state(pid) == "Z", 30, "the decoder gone")


def test_a_decoder_killed_mid_decode_costs_that_request_only(hostile: Server) -> None:
    """The decoder dies (OOM kill, a crash in a parser) while it holds a large body: that request is a
    400 naming what happened, a new decoder is started, and the next large body decodes."""
    pid = decoder_pid(hostile)
    rows = OFFLOAD_BYTES // 24 + 1
    x = np.full((rows, 4), 0.125, np.float32)
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": x.reshape(-1)}]},
                        option=orjson.OPT_SERIALIZE_NUMPY)  # fmt: skip
    assert len(body) >= OFFLOAD_BYTES
    result: list[httpx.Response] = []
    post = lambda: httpx.post(hostile.base + "/v2/models/plain/infer", content=body, timeout=300)  # noqa: E731
    os.kill(pid, signal.SIGSTOP)
    sender = threading.Thread(target=lambda: result.append(post()), daemon=True)
    sender.start()
    wait_for(lambda: hostile.metric("meshserve_inference_large_decodes") == 1, 120, "the body at the decoder")
    os.kill(pid, signal.SIGKILL)
    sender.join(120)
    assert result and result[0].status_code == 400, result
    assert "killed the decoder process" in result[0].json()["error"]
    assert wait_for(lambda: decoder_pid(hostile) != pid, 60, "a new decoder")
    served_after(hostile)
    again = post()
    assert again.status_code == 200, again.text
