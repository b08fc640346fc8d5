"""What of a request goes upstream and what of an answer comes back: pure header and query filters.

Hop-by-hop fields (RFC 9110 §7.6.1) belong to one connection and are never forwarded: Connection
and every field it names, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade, Trailer,
Proxy-Authorization and Proxy-Authenticate. With `hide_credentials` (Kong key-auth) every
configured key location goes too, not only the one the key was read from: each key-name header
and each key-name query parameter. Trailers never reach here (services.common.httpserver drops them).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote_plus

HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
# Set by the gateway's own client from the endpoint and the body it sends; the body is read whole,
# so no 100-continue goes upstream either.
_REQUEST_OWN = frozenset({"host", "content-length", "expect"})
REQUEST_SKIP = HOP_BY_HOP | _REQUEST_OWN
RESPONSE_SKIP = frozenset({n.encode() for n in HOP_BY_HOP} | {b"content-length", b"x-request-id", b"server"})


def connection_tokens(value: str | None) -> frozenset[str]:
    """The field names a Connection header lists (lowercase); they are hop-by-hop too."""
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


def upstream_headers(headers: dict[str, str], credentials: tuple[str, ...]) -> dict[str, str]:
    """The request's headers without hop-by-hop fields and without the `credentials` header names."""
    named = connection_tokens(headers.get("connection"))
    return {k: v for k, v in headers.items() if k not in REQUEST_SKIP and k not in named and k not in credentials}


def query_key(query: bytes, key_names: tuple[str, ...]) -> str | None:
    """The first key-name parameter's value in a query string (Kong key-auth's second location)."""
    params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return next((v for k, v in params if k.lower() in key_names), None)


def strip_query_keys(query: bytes, key_names: tuple[str, ...]) -> bytes:
    """The query string without key-name parameters; every other byte kept as the client sent it."""
    kept = [
        part
        for part in query.split(b"&")
        if part and unquote_plus(part.split(b"=", 1)[0].decode("latin-1")).lower() not in key_names
    ]
    return b"&".join(kept)


def passed_back(
    raw_headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]
) -> tuple[list[tuple[bytes, bytes]], str]:
    """An upstream answer's headers as the client gets them (lowercase names; hop-by-hop fields, those
    the upstream's Connection names, and framing removed; the gateway's `extra` added) and the
    x-model-version it carried ("" if none). One pass; a second only when a Connection header named fields."""
    out: list[tuple[bytes, bytes]] = []
    version = b""
    named: set[bytes] | None = None
    for raw_name, raw_value in raw_headers:
        name = raw_name.lower()
        if name in RESPONSE_SKIP:
            if name == b"connection":
                tokens = {t.strip().lower() for t in raw_value.split(b",")} - {b""}
                named = tokens if named is None else named | tokens
            continue
        if name == b"x-model-version":
            version = raw_value
        out.append((name, raw_value))
    if named:
        out = [(name, value) for name, value in out if name not in named]
        if b"x-model-version" in named:
            version = b""
    out.extend(extra)
    return out, version.decode("latin-1")
