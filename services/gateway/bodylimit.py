"""The gateway's request body limit, a policy of its chain: 413 before anything goes upstream.

Refused on the declared Content-Length when there is one (access phase), else counted while the body
is read (read phase: a chunked body has no length to check first). A client gone before its body is
complete gets no answer, and a truncated body never goes upstream (services.common.asgi.ClientGone
ends the chain).
"""

from __future__ import annotations

from services.common.asgi import BodyTooLarge, read_body
from services.gateway.exchange import Exchange, GatewayError

MAX_BODY_BYTES = 64 * 1024 * 1024


class PayloadTooLarge(GatewayError):
    """413; the answer names the chosen version, as every answer after the version choice does."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """Access phase: the declared length; read phase: the body itself, counted as it arrives."""

    def __init__(self, limit: int = MAX_BODY_BYTES) -> None:
        self.limit = limit

    def access(self, ex: Exchange) -> None:
        declared = ex.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the gateway's limit of {self.limit}")

    async def read(self, ex: Exchange) -> None:
        try:
            ex.body = await read_body(ex.receive, self.limit)
        except BodyTooLarge:
            raise PayloadTooLarge(f"request body is over the gateway's limit of {self.limit} bytes") from None
