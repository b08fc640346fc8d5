"""The client's HTTP/1.1 transport: framing, keep-alive reuse, closed connections, the connection cap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest

from services.common.http1 import ConnectFailure, ConnectionReset, Headers, Pool
from tests.services.gateway.stack import Proc, start_echo
from tests.services.modelserver.serverproc import free_port


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_echo(tmp_path_factory.mktemp("http1"), "http1")
    yield proc
    proc.stop()


def test_content_length_and_chunked_bodies_and_keep_alive_reuse(echo: Proc) -> None:
    async def main() -> None:
        pool = Pool(max_connections=4)
        status, raw, body = await pool.request("127.0.0.1", echo.port, "POST", "/echo?x=1", {"a": "b"}, b"hello")
        assert status == 200
        seen = orjson.loads(body)
        assert (seen["path"], seen["query"], seen["body_bytes"], seen["headers"]["a"]) == ("/echo", "x=1", 5, "b")
        assert Headers(raw)["X-Model-Version"] == "7"
        status, raw, chunked = await pool.request("127.0.0.1", echo.port, "GET", "/chunked", {}, b"")
        assert status == 200 and orjson.loads(chunked)["path"] == "/chunked"
        assert Headers(raw).get("transfer-encoding") == "chunked"
        assert pool.open == 1  # both went over the one kept-alive connection
        pool.close()

    asyncio.run(main())


def test_body_framed_by_connection_close_and_a_reset_before_the_answer() -> None:
    async def main() -> None:
        async def by_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\nuntil-close")
            await writer.drain()
            writer.close()

        async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        servers = [await asyncio.start_server(handler, "127.0.0.1", 0) for handler in (by_close, rude)]
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        pool = Pool(max_connections=2)
        status, raw, body = await pool.request("127.0.0.1", ports[0], "GET", "/", {}, b"")
        assert (status, body, Headers(raw)["x-a"]) == (200, b"until-close", "1")
        with pytest.raises(ConnectionReset):
            await pool.request("127.0.0.1", ports[1], "GET", "/", {}, b"")
        assert pool.open == 0  # neither connection is kept
        for server in servers:
            server.close()

    asyncio.run(main())


def test_refused_connection_is_a_connect_failure() -> None:
    async def main() -> None:
        pool = Pool(max_connections=1)
        with pytest.raises(ConnectFailure):
            await pool.request("127.0.0.1", free_port(), "GET", "/", {}, b"")
        assert pool.open == 0

    asyncio.run(main())


def test_connection_cap_queues_callers_and_a_cancelled_request_frees_its_slot(echo: Proc) -> None:
    async def main() -> None:
        pool = Pool(max_connections=2)
        slow = [
            asyncio.create_task(pool.request("127.0.0.1", echo.port, "GET", "/sleep/200", {}, b"")) for _ in range(5)
        ]
        opened: set[int] = set()  # pool.open after every turn of the loop while the five run
        while not all(task.done() for task in slow):
            opened.add(pool.open)
            await asyncio.sleep(0.001)
        results = await asyncio.gather(*slow)
        assert [status for status, _, _ in results] == [200] * 5
        assert max(opened) == 2, opened  # never more than the cap: three callers waited for a connection
        assert pool.open == 2
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.request("127.0.0.1", echo.port, "GET", "/sleep/2000", {}, b"")
        assert pool.open == 1  # the timed-out connection was closed, not reused
        status, _, _ = await pool.request("127.0.0.1", echo.port, "GET", "/echo", {}, b"")
        assert status == 200
        pool.close()

    asyncio.run(main())


def test_head_answers_without_waiting_for_a_body(echo: Proc) -> None:
    async def main() -> None:
        pool = Pool(max_connections=1)
        async with asyncio.timeout(5):
            status, _, body = await pool.request("127.0.0.1", echo.port, "HEAD", "/echo", {}, b"")
        assert status == 200 and body == b""
        status, _, body = await pool.request("127.0.0.1", echo.port, "GET", "/echo", {}, b"")
        assert status == 200 and orjson.loads(body)["path"] == "/echo"
        pool.close()

    asyncio.run(main())


def test_interim_100_continue_is_skipped() -> None:
    async def main() -> None:
        async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await reader.read()  # hold the connection until the client is done

        server = await asyncio.start_server(interim, "127.0.0.1", 0)
        pool = Pool(max_connections=1)
        status, raw, body = await pool.request("127.0.0.1", server.sockets[0].getsockname()[1], "POST", "/", {}, b"x")
        assert (status, body, Headers(raw).get("content-length")) == (201, b"ok", "2")
        pool.close()
        server.close()

    asyncio.run(main())
