"""The KeyAuth policy alone (services/gateway/keyauth.py); `authenticate` itself: test_headers.py."""

from __future__ import annotations

import pytest

from services.common.errors import HTTPError
from services.gateway.exchange import Exchange
from services.gateway.keyauth import KeyAuth, Unauthorized
from tests.services.gateway.exchanges import KEY, exchange, snapshot


def test_a_known_key_names_the_consumer_and_what_must_not_go_upstream() -> None:
    ex = exchange(snapshot(), "/v2/models/digits/infer", query=b"apikey=" + KEY.encode() + b"&a=1")
    KeyAuth().access(ex)
    assert (ex.consumer, ex.query, ex.credentials) == ("demo", b"a=1", ("apikey", "x-api-key"))
    ex = exchange(snapshot(hide_credentials=False), "/x", {"x-api-key": KEY})
    KeyAuth().access(ex)
    assert (ex.consumer, ex.credentials) == ("demo", ())


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "No API key found in request"), ({"apikey": "wrong"}, "Invalid authentication credentials")],
)
def test_no_key_or_a_wrong_one_is_a_401_with_kongs_body(headers: dict[str, str], message: str) -> None:
    ex = exchange(snapshot(), "/v2/models/digits/infer", headers)
    ex.error_key = "error"  # a v2 route: still Kong's `message` for key-auth
    with pytest.raises(Unauthorized) as caught:
        KeyAuth().access(ex)
    assert isinstance(caught.value, HTTPError) and caught.value.status == 401
    ex.refuse(caught.value)
    assert (ex.status, ex.payload) == (401, b'{"message":"%s"}' % message.encode())
    assert [name for name, _ in ex.response_headers] == [b"content-type", b"x-request-id"]
    assert isinstance(ex, Exchange)
