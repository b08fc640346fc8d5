"""Request bodies sent with `Content-Encoding: gzip` or `deflate` (tritonclient can send both),
decoded under the same limit as a plain body: the limit applies to the decoded size, so a small
zip bomb stops at `limit + 1` decoded bytes and answers 413, never filling memory."""

from __future__ import annotations

import zlib

from services.common.asgi import BodyTooLarge

# zlib window bits: gzip framing, zlib framing (RFC 1950, what HTTP calls "deflate"), raw deflate
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
SUPPORTED = ("gzip", "deflate")


class UnsupportedEncoding(ValueError):
    """A Content-Encoding this server does not decode (answer 415)."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decoded per its Content-Encoding (`identity` or empty: as is); BodyTooLarge past `limit`
    decoded bytes; ValueError for a body that is not valid in that encoding."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; use one of {list(SUPPORTED)}")
    try:
        return _inflate(body, wbits, limit)
    except zlib.error as exc:
        if name != "deflate":
            raise ValueError(f"body is not valid {name}: {exc}") from None
    try:  # some clients send raw deflate (no zlib header) as "deflate"
        return _inflate(body, -zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        raise ValueError(f"body is not valid deflate: {exc}") from None


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    out = decoder.decompress(body, limit + 1)
    if len(out) > limit or decoder.unconsumed_tail:
        raise BodyTooLarge(limit)
    out += decoder.flush()
    if len(out) > limit:
        raise BodyTooLarge(limit)
    if not decoder.eof:
        raise zlib.error("truncated stream")
    return out
