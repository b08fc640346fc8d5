"""One error type and one error body for every service.

Each service's refusals (the wire codec's and the model server's ProtocolError, the pipeline's
BadRequest and StageFailed, the version choice's RouteError, the client's UpstreamError) are an
`HTTPError`: a status and a message for the caller. Every answer for one is `error_body`:
`{"error": message}` (Triton's and KServe's shape; Kong's routes say `message` instead), with extra
fields where a service names more (`stage`).
"""

from __future__ import annotations

import orjson


class HTTPError(Exception):
    """A request refused or not served: `status` is the HTTP status, `message` goes to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ProtocolError(HTTPError):
    """A request refused by the v2 wire codec or the model server; `headers` go with the answer
    (e.g. retry-after), as ASGI (name, value) byte pairs."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(status, message)
        self.headers = headers

    def __reduce__(self) -> tuple:  # travels back from the model server's decoder process intact
        return (type(self), (self.status, self.message, self.headers))


def quoted(text: str) -> str:
    """A client-supplied value as an error message quotes it: repr, cut short."""
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text)} characters)"


def error_body(message: str, key: str = "error", **extra: str) -> bytes:
    """The JSON body of an error answer."""
    return orjson.dumps({key: message, **extra})
