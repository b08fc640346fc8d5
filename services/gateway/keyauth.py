"""Kong's key-auth: a pure function of the policy snapshot and the request's headers and query, and the
chain's policy that applies it (services.gateway.chain).

The key is read from the first `key_names` header present, else from a `key_names` query parameter;
trailers never count (services.common.httpserver drops them before a request reaches the gateway).
With `hide_credentials`, every key location is named for removal, not only the one the key came from.
"""

from __future__ import annotations

from services.gateway.exchange import Exchange, GatewayError
from services.gateway.headers import query_key, strip_query_keys
from services.gateway.policy import Policy


class Unauthorized(GatewayError):
    """No key, or one no consumer has: 401 with Kong's message (always under `message`)."""

    key = "message"

    def __init__(self, message: str) -> None:
        super().__init__(401, message)


def authenticate(policy: Policy, headers: dict[str, str], query: bytes) -> tuple[str, bytes, tuple[str, ...]]:
    """(consumer, the query to forward, header names to strip upstream); raises Unauthorized."""
    key = next((headers[name] for name in policy.key_names if name in headers), None)
    if key is None and query:
        key = query_key(query, policy.key_names)
    if not key:
        raise Unauthorized("No API key found in request")
    consumer = policy.keys.get(key)
    if consumer is None:
        raise Unauthorized("Invalid authentication credentials")
    if not policy.hide_credentials:
        return consumer, query, ()
    return consumer, strip_query_keys(query, policy.key_names) if query else query, policy.key_names


class KeyAuth:
    """Access phase: names the consumer (or answers 401) and what of the key must not go upstream."""

    def access(self, ex: Exchange) -> None:
        ex.consumer, ex.query, ex.credentials = authenticate(ex.policy, ex.headers, ex.query)
