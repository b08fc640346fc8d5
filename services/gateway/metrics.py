"""The gateway's Prometheus metrics (names fixed by the local-stack contracts) and client hooks.

Labelled children are cached per label tuple: `.labels()` costs a lock and a dict build each
call, and the hot path does one counter and one histogram operation per request: `RequestMetrics`,
the log phase of the gateway's chain (services.gateway.chain), after the answer is sent. Those two
are services.common.leanmetrics' lock-free ones (updated on the event-loop thread only).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from services.common import leanmetrics as lean
from services.common import metric_names as names
from services.common.telemetry import LATENCY_BUCKETS

if TYPE_CHECKING:
    from services.gateway.exchange import Exchange

REQUESTS = lean.Counter(
    names.GATEWAY_REQUESTS,
    "Requests answered by the gateway, by route, upstream service, answering model version and status code.",
    ["route", "upstream", "version", "code"],
)
DURATION = lean.Histogram(
    names.GATEWAY_DURATION,
    "Time from request start to response end at the gateway.",
    ["route", "upstream"],
    buckets=LATENCY_BUCKETS,  # every SLO bound must be a bucket (see LATENCY_BUCKETS)
)
RETRIES = Counter(names.GATEWAY_RETRIES, "Retries sent to an upstream.", ["upstream"])
EJECTIONS = Counter(names.GATEWAY_EJECTIONS, "Outlier ejections of an upstream's hosts.", ["upstream"])
# `host`, not `instance`: with honor_labels the app's label would overwrite Prometheus's target label.
EJECTED = Gauge(names.GATEWAY_EJECTED, "1 while a host is ejected by outlier detection.", ["upstream", "host"])
RATE_LIMITED = Counter(names.GATEWAY_RATE_LIMITED, "Requests refused with 429.", ["consumer"])
REJECTED = Counter(
    names.GATEWAY_REJECTED,
    "Requests failed fast without (another) try: 503 for pending_overflow and no_healthy_upstream, 502 for "
    "query_of_death (the same request reset the connection of two hosts).",
    ["upstream", "reason"],
)
RETRIES_SKIPPED = Counter(
    names.GATEWAY_RETRIES_SKIPPED,
    "Retries not sent although retry_on allowed them (reason: retry_budget, Envoy's retry budget).",
    ["upstream", "reason"],
)
SPEC_RELOADS = Counter(
    names.GATEWAY_SPEC_RELOADS,
    "Changed mesh.yaml files by outcome: applied, invalid (kept the old one), refused (would lock everyone out).",
    ["outcome"],
)
SPEC_REFUSED = Gauge(
    names.GATEWAY_SPEC_RELOAD_REFUSED, "1 while the latest mesh.yaml change was refused and the old spec serves."
)
MIRROR_REQUESTS = Counter(
    names.GATEWAY_MIRROR_REQUESTS,
    "Mirrored (shadow) requests by outcome: ok, error (status or failure), dropped (too many in flight).",
    ["model", "version", "outcome"],
)
MIRROR_AGREEMENT = Counter(
    names.GATEWAY_MIRROR_AGREEMENT,
    "Mirrored infer rows whose top-1 class matched (agree=true) or not the primary version's answer.",
    ["model", "primary", "mirror", "agree"],
)


class LabelCache:
    """`metric.labels(*values)` memoised (label sets are bounded by the spec)."""

    def __init__(self, metric: Counter | Histogram | Gauge) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], object] = {}

    def __call__(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


requests = LabelCache(REQUESTS)
duration = LabelCache(DURATION)


class RequestMetrics:
    """Log phase: every answer counted by route label, upstream (empty when the gateway answered itself),
    answering version and status, and timed from the request's start to the answer's end."""

    def log(self, ex: Exchange) -> None:
        requests(ex.route_label, ex.upstream, ex.answered_version, str(ex.status)).inc()
        duration(ex.route_label, ex.upstream).observe(time.perf_counter() - ex.start)


def count_spec_reload(outcome: str) -> None:
    """services.common.specfollow's outcome -> the reload counter and the refused gauge."""
    SPEC_RELOADS.labels(outcome).inc()
    if outcome == "refused":
        SPEC_REFUSED.set(1)
    elif outcome == "applied":
        SPEC_REFUSED.set(0)


class GatewayEvents:
    """services.common.client.ClientEvents -> gateway metrics."""

    def retried(self, service: str) -> None:
        RETRIES.labels(service).inc()

    def ejected(self, service: str, instance: str) -> None:
        EJECTIONS.labels(service).inc()
        EJECTED.labels(service, instance).set(1)

    def readmitted(self, service: str, instance: str) -> None:
        EJECTED.labels(service, instance).set(0)

    def rejected(self, service: str, reason: str) -> None:
        REJECTED.labels(service, reason).inc()

    def retry_skipped(self, service: str, reason: str) -> None:
        RETRIES_SKIPPED.labels(service, reason).inc()
