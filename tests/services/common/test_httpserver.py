"""The one guarded HTTP front every service runs (services/common/httpserver.py), seen on the model server.

The gateway and the business API are held to the same cases in their own hostile-input tests
(tests/services/gateway/test_hostile.py, tests/services/local/test_hostile_pipeline.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.httpserver import HttpLimits
from tests.services.gateway.hostile import connect, exchange, read_all, request, status_of
from tests.services.gateway.stack import MODELS
from tests.services.modelserver.serverproc import Server, run_server

INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MESHSERVE_HTTP_HEADER_TIMEOUT", "1")
        env.setenv("MESHSERVE_HTTP_BODY_TIMEOUT", "1")
        log_dir = tmp_path_factory.mktemp("httpserver")
        with run_server(MODELS, "--model", "digits:1", "--poll-interval", "0", log_dir=log_dir) as running:
            yield running


def test_limits_from_the_environment() -> None:
    assert HttpLimits.from_env({}) == HttpLimits(61440, 100, 10.0, 10.0)
    assert HttpLimits.from_env({"MESHSERVE_HTTP_MAX_HEADERS": "20"}).max_headers == 20
    with pytest.raises(ValueError, match="not a number"):
        HttpLimits.from_env({"MESHSERVE_HTTP_HEADER_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="positive"):
        HttpLimits.from_env({"MESHSERVE_HTTP_BODY_TIMEOUT": "0"})


def test_model_server_answers_431_for_oversize_or_too_many_headers(server: Server) -> None:
    assert status_of(exchange(server.port, request("POST", INFER, {"x-big": "a" * 70_000}, b"{}"))) == 431
    many = [(f"x-h{i}", "1") for i in range(101)]
    assert status_of(exchange(server.port, request("POST", INFER, many, b"{}"))) == 431
    assert server.get("/v2/health/ready").status_code == 200


def test_headers_just_under_the_caps_are_served(server: Server) -> None:
    near = [(f"x-h{i}", "v" * 500) for i in range(95)]  # ~48 KiB in 96 fields
    response = exchange(server.port, request("GET", "/v2/health/ready", [*near, ("connection", "close")]))
    assert status_of(response) == 200, response[:300]


def test_model_server_times_out_a_stalled_head_and_body_with_408(server: Server, tmp_path: Path) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: x\r\n")
        assert status_of(read_all(sock, 10)) == 408
    with connect(server.port) as sock:
        sock.sendall(request("POST", INFER, {"content-length": "1000"}) + b"{")
        assert status_of(read_all(sock, 10)) == 408
