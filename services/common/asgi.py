"""Reading a request body under a size limit, for the raw-ASGI hot paths (model server infer, gateway).

The limit is enforced while the bytes arrive: a chunked body carries no Content-Length to check first.
Callers turn the two exceptions into their own protocol's answer (413, or nothing for a gone client).
"""

from __future__ import annotations

from starlette.types import Receive


class BodyTooLarge(Exception):
    """The body passed `limit` bytes while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes")
        self.limit = limit


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, counted as it arrives; one chunk is returned without a copy."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
