"""The guarded protocol sends a response's head and body in one transport write (services/common/httpserver.py).

Driven in process through uvicorn's own protocol machinery with a transport that records its writes:
what reaches the socket, and in how many writes, is what the client's kernel sees.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from services.common.httpserver import HttpLimits
from services.common.httpserver import config as http_config


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _serve(app: Any, *requests: bytes) -> list[bytes]:
    """Feed `requests` (one read each) to a fresh connection; the writes once every answer is out."""
    config: uvicorn.Config = http_config(app, limits=HttpLimits())
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Recording()
    protocol.connection_made(transport)
    for data in requests:
        protocol.data_received(data)
        for _ in range(50):  # the app runs as a task: let it finish
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport.writes


async def _answer(scope: dict, receive: Any, send: Any) -> None:
    await receive()
    body = b'{"ok":true}' if scope["method"] != "HEAD" else b""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


GET = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n"


def test_head_and_body_go_out_in_one_write() -> None:
    writes = asyncio.run(_serve(_answer, GET, GET))
    assert len(writes) == 2  # one per response, two keep-alive requests
    for write in writes:
        assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b'\r\n\r\n{"ok":true}')


def test_a_response_without_a_body_write_still_goes_out() -> None:
    writes = asyncio.run(_serve(_answer, b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n"))
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")


def test_a_streamed_body_follows_its_head_in_order() -> None:
    async def stream(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})

    sent = b"".join(asyncio.run(_serve(stream, GET)))
    head, _, body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
    assert body == b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"


@pytest.mark.parametrize("expect", [True, False])
def test_100_continue_goes_out_before_the_answer(expect: bool) -> None:
    post = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n"
    post += b"expect: 100-continue\r\n\r\n" if expect else b"\r\n"

    async def run() -> list[bytes]:
        config: uvicorn.Config = http_config(_answer, limits=HttpLimits())
        config.load()
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = Recording()
        protocol.connection_made(transport)
        protocol.data_received(post)
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.data_received(b"{}")
        for _ in range(50):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport.writes

    writes = asyncio.run(run())
    answers = [w for w in writes if not w.startswith(b"HTTP/1.1 100")]
    assert len(answers) == 1 and answers[0].startswith(b"HTTP/1.1 200 OK")
    assert (writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n") is expect
