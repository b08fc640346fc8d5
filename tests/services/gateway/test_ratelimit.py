"""The RateLimit policy alone (services/gateway/ratelimit.py); the limiter's windows: test_policy.py."""

from __future__ import annotations

import pytest

from services.gateway.ratelimit import RateLimit, RateLimited
from tests.services.gateway.exchanges import exchange, snapshot

POLICY = snapshot()


def authenticated(consumer: str):
    ex = exchange(POLICY, "/v2/models/digits/infer")
    ex.consumer = consumer
    return ex


def test_the_sixth_request_in_the_hour_is_429_with_the_windows_headers() -> None:
    policy = RateLimit(clock=lambda: 7200.0)
    for _ in range(5):
        ex = authenticated("limited")
        policy.access(ex)
        assert (b"x-ratelimit-limit-hour", b"5") in ex.extra
    ex = authenticated("limited")
    with pytest.raises(RateLimited) as caught:
        policy.access(ex)
    ex.refuse(caught.value)
    assert (ex.status, ex.payload) == (429, b'{"message":"API rate limit exceeded"}')
    assert (b"x-ratelimit-remaining-hour", b"0") in ex.response_headers
    assert (b"retry-after", b"3600") in ex.response_headers
    policy.access(authenticated("demo"))  # another consumer's windows are its own


def test_a_new_window_lets_the_consumer_in_again() -> None:
    now = [0.0]
    policy = RateLimit(clock=lambda: now[0])
    for _ in range(5):
        policy.access(authenticated("limited"))
    with pytest.raises(RateLimited):
        policy.access(authenticated("limited"))
    now[0] = 3600.0
    policy.access(authenticated("limited"))
