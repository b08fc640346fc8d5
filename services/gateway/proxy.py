"""The upstream call, the terminal policy of the gateway's chain (Envoy's router filter).

Through the ONE shared client (services.common.client: pooled connections, retries, outlier
ejection, query-of-death memory). An upstream that gives no answer (UpstreamError: 502/503/504)
is answered here with the route's error key, the chosen version and Retry-After when the client
sets one; a reply is left on the exchange for the response phase (services.gateway.forward).
"""

from __future__ import annotations

from services.common.client import Client, UpstreamError
from services.gateway.exchange import Exchange


class Proxy:
    """Proxy phase: one request to the chosen upstream service."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def proxy(self, ex: Exchange) -> None:
        upstream = self.client.upstream(ex.service, ex.resilience)
        ex.upstream = ex.service
        try:
            ex.reply = await upstream.request(ex.method, ex.target, body=ex.body, headers=ex.outgoing)
        except UpstreamError as exc:
            ex.refuse(exc)
            if exc.retry_after:
                ex.response_headers.append((b"retry-after", str(exc.retry_after).encode()))
            ex.answered_version = str(ex.version) if ex.model_route is not None else ""
