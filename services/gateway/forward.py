"""What goes upstream and what comes back, as two policies of the gateway's chain.

`Forward` (forward phase, once the body is read): the request's headers less hop-by-hop fields and
credentials (services.gateway.headers), plus x-request-id and x-consumer-username (Kong's), and the
target as the client sent it (raw path, the query without hidden keys). `ResponseFilter` (response
phase): the upstream's answer as the client gets it; unversioned model metadata lists every served
version (services.gateway.protocol), and an answer without its own x-model-version names the chosen one.
"""

from __future__ import annotations

from services.gateway import protocol
from services.gateway.exchange import Exchange
from services.gateway.headers import passed_back, upstream_headers


class Forward:
    """Forward phase: `outgoing` headers and `target` for the proxy (and the mirror)."""

    def forward(self, ex: Exchange) -> None:
        outgoing = ex.outgoing = upstream_headers(ex.headers, ex.credentials)
        outgoing["x-request-id"] = ex.request_id
        outgoing["x-consumer-username"] = ex.consumer
        target = ex.raw_path or ex.path.encode()
        query = ex.query
        ex.target = (target + b"?" + query if query else target).decode("latin-1")


class ResponseFilter:
    """Response phase: an upstream's reply -> the answer (no-op when the upstream gave none)."""

    def response(self, ex: Exchange) -> None:
        reply = ex.reply
        if reply is None:
            return
        ex.status, ex.payload = reply.status, reply.body
        headers, ex.answered_version = passed_back(reply.raw_headers, ex.extra)
        ex.response_headers = headers
        route = ex.model_route
        if route is None:
            return
        if reply.status == 200 and protocol.is_unversioned_metadata(
            ex.method, ex.rest, ex.path_version, route.header_name in ex.headers
        ):
            ex.payload = protocol.all_versions_metadata(ex.payload, protocol.served_versions(ex.policy, route.name))
        if not ex.answered_version:
            ex.answered_version = str(ex.version)
            headers.extend(ex.chosen)
