"""wrk output parsing (pure) and one real wrk run against a loopback server that checks the body."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtests.bench.wrk import MARKER, parse_wrk_output, summarize, wrk_command

SUMMARY = (
    'WRK_JSON {"requests":1000,"duration_us":2000000,"bytes":5000,'
    '"errors":{"connect":0,"read":1,"write":0,"status":10,"timeout":2},'
    '"latency_us":{"min":100,"mean":1500.5,"max":9000,"stdev":12.0,"p50":1200,"p90":2000,"p99":4500,"p999":8000}}'
)


def test_parse_finds_the_marker_line_among_wrk_output() -> None:
    stdout = f"Running 2s test @ http://x\n  1 threads and 8 connections\n{SUMMARY}\nRequests/sec: 500\n"
    assert parse_wrk_output(stdout)["requests"] == 1000


def test_parse_without_summary_says_so() -> None:
    with pytest.raises(ValueError, match="WRK_JSON"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_summarize_counts_only_successful_answers_and_converts_to_ms() -> None:
    point = summarize(parse_wrk_output(SUMMARY), connections=8)
    assert point["rps"] == 495.0  # (1000 - 10 non-2xx) / 2 s
    assert point["failed"] == 13
    assert (point["p50_ms"], point["p99_ms"]) == (1.2, 4.5)
    assert point["concurrency"] == 8


def test_command_pins_wrk_and_passes_body_and_headers_to_the_script(tmp_path: Path) -> None:
    cmd = wrk_command("http://127.0.0.1:1/x", tmp_path / "b", {"A-B": "1"}, 32, 3.0, core=1)
    if shutil.which("taskset"):
        assert cmd[:3] == ["taskset", "-c", "1"]
    assert "-c32" in cmd and "-d3s" in cmd
    assert cmd[-3:] == ["--", str(tmp_path / "b"), "A-B=1"]


class _Recorder(BaseHTTPRequestHandler):
    """200 when the POST carries the expected body and header, 400 otherwise."""

    expected_sha: str = ""
    seen: list[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        good = hashlib.sha256(body).hexdigest() == self.expected_sha and self.headers.get("X-Bench") == "yes"
        self.seen.append(len(body))
        self.send_response(200 if good else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    body = bytes(range(256)) * 40  # binary, with NUL bytes: must arrive intact
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    _Recorder.expected_sha, _Recorder.seen = hashlib.sha256(body).hexdigest(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/infer", path
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (Debian package) not installed")
def test_real_wrk_posts_the_exact_body_and_reports_json(recorder: tuple[str, Path]) -> None:
    from loadtests.bench.wrk import run_wrk

    url, body = recorder
    point = run_wrk(url, body, {"X-Bench": "yes"}, connections=2, seconds=1)
    assert point["requests"] > 0 and point["failed"] == 0
    assert set(_Recorder.seen) == {body.stat().st_size}
    wrong = run_wrk(url, body, {"X-Bench": "no"}, connections=1, seconds=1)
    assert wrong["errors"]["status"] == wrong["requests"] > 0 and wrong["rps"] == 0.0


def test_marker_is_what_post_lua_prints() -> None:
    lua = (Path(__file__).parents[3] / "loadtests" / "bench" / "post.lua").read_text()
    assert f"'{MARKER}" in lua
