"""The gateway's pure request/answer filters and key-auth (services/gateway/headers.py, keyauth.py)."""

from __future__ import annotations

import pytest

from mesh.spec import MeshSpec
from services.gateway.headers import connection_tokens, passed_back, strip_query_keys, upstream_headers
from services.gateway.keyauth import Unauthorized, authenticate
from services.gateway.policy import build_policy

KEYS = ("apikey", "x-api-key")


def policy(hide: bool = True):
    spec = MeshSpec.model_validate(
        {
            "models": {},
            "gateway": {
                "key_names": ["apikey", "X-API-Key"],
                "hide_credentials": hide,
                "consumers": [{"username": "demo", "api_key": {"env": "K"}}],
            },
        }
    )
    return build_policy(spec, {"K": "secret"})


def test_connection_names_more_hop_by_hop_headers() -> None:
    assert connection_tokens("close, X-Private ,,keep-alive") == {"close", "x-private", "keep-alive"}
    headers = {"connection": "x-private", "x-private": "1", "te": "trailers", "proxy-authorization": "b", "a": "1"}
    assert upstream_headers(headers, ()) == {"a": "1"}
    assert upstream_headers({"apikey": "k", "x-api-key": "k", "a": "1"}, KEYS) == {"a": "1"}


def test_only_key_parameters_leave_the_query() -> None:
    assert strip_query_keys(b"apikey=1&a=x%20y&API%4BEY=2&X-Api-Key=3&b&=c", KEYS) == b"a=x%20y&b&=c"
    assert strip_query_keys(b"apikey=1", KEYS) == b""


def test_answers_lose_hop_by_hop_and_what_their_connection_names() -> None:
    raw = [(b"Connection", b"X-Up"), (b"X-Up", b"1"), (b"Keep-Alive", b"5"), (b"X-Model-Version", b"2"), (b"A", b"b")]
    headers, version = passed_back(raw, [(b"x-request-id", b"r")])
    assert headers == [(b"x-model-version", b"2"), (b"a", b"b"), (b"x-request-id", b"r")] and version == "2"


def test_key_auth_reads_headers_then_query_and_names_every_location_to_hide() -> None:
    assert authenticate(policy(), {"x-api-key": "secret"}, b"a=1&apikey=other") == ("demo", b"a=1", KEYS)
    assert authenticate(policy(), {}, b"a=1&apikey=secret") == ("demo", b"a=1", KEYS)
    assert authenticate(policy(hide=False), {}, b"apikey=secret") == ("demo", b"apikey=secret", ())
    with pytest.raises(Unauthorized, match="No API key"):
        authenticate(policy(), {"authorization": "secret"}, b"")
    with pytest.raises(Unauthorized, match="Invalid authentication"):
        authenticate(policy(), {"apikey": "wrong"}, b"")
