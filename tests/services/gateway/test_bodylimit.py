"""The BodyLimit policy alone (services/gateway/bodylimit.py)."""

from __future__ import annotations

import asyncio

import pytest

from services.common.asgi import ClientGone
from services.gateway.bodylimit import BodyLimit, PayloadTooLarge
from tests.services.gateway.exchanges import exchange, snapshot

POLICY = snapshot()


def receiving(*chunks: bytes, gone: bool = False):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if gone:
        messages[-1] = {"type": "http.disconnect"}

    async def receive() -> dict:
        return messages.pop(0)

    return receive


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    ex = exchange(POLICY, "/v2/models/digits/infer", {"content-length": "11"})
    ex.error_key, ex.chosen = "error", ((b"x-model-version", b"1"),)
    with pytest.raises(PayloadTooLarge) as caught:
        BodyLimit(10).access(ex)
    ex.refuse(caught.value)
    assert ex.status == 413 and b"request body of 11 bytes" in ex.payload and b'"error"' in ex.payload
    assert (b"x-model-version", b"1") in ex.response_headers  # a version was chosen: the answer names it
    BodyLimit(11).access(ex)


def test_a_chunked_body_is_counted_while_it_is_read() -> None:
    ex = exchange(POLICY, "/v2/models/digits/infer")
    ex.receive = receiving(b"12345", b"678")
    asyncio.run(BodyLimit(8).read(ex))
    assert ex.body == b"12345678"
    ex.receive = receiving(b"12345", b"6789")
    with pytest.raises(PayloadTooLarge, match="over the gateway's limit of 8 bytes"):
        asyncio.run(BodyLimit(8).read(ex))


def test_a_client_gone_midway_ends_the_exchange_without_a_body() -> None:
    ex = exchange(POLICY, "/v2/models/digits/infer")
    ex.receive = receiving(b"12345", b"", gone=True)
    with pytest.raises(ClientGone):
        asyncio.run(BodyLimit(100).read(ex))
    assert ex.body == b""
