"""Prometheus metrics of the model server. Names are a contract: dashboards, alerts and autoscaling
(queue depth) are built on them. Label children are bound once per model version, never per request.
Those updated per request or per batch (all on the event-loop thread) are services.common.leanmetrics'
lock-free ones; /metrics reads the same either way."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.common import leanmetrics as lean
from services.common import metric_names as names
from services.common.telemetry import LATENCY_BUCKETS
from services.modelserver.stats import VersionStats

LABELS = ("model", "version")
STATES = ("LOADING", "READY", "UNAVAILABLE", "UNLOADED")
OUTCOMES = ("success", "error", "rejected", "timeout")
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = lean.Counter(
    names.INFERENCE_REQUESTS,
    "Infer requests answered, by outcome (success|error|rejected|timeout).",
    [*LABELS, "outcome"],
)
REQUEST_DURATION = lean.Histogram(
    names.INFERENCE_DURATION,
    "End-to-end time of an infer request inside the server (body read to response sent).",
    LABELS,
    buckets=LATENCY_BUCKETS,
)
QUEUE_DURATION = lean.Histogram(
    names.INFERENCE_QUEUE_DURATION,
    "Time a request waited in the batcher queue before its batch started.",
    LABELS,
    buckets=LATENCY_BUCKETS,
)
COMPUTE_DURATION = lean.Histogram(
    names.INFERENCE_COMPUTE_DURATION,
    "onnxruntime time per execution (one batch), including batch concatenation.",
    LABELS,
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = lean.Histogram(
    names.INFERENCE_BATCH_SIZE,
    "Batch size of each execution (rows along the batch dimension); _count is executions.",
    LABELS,
    buckets=_BATCH,
)
INFERENCES = lean.Counter(names.INFERENCE_COUNT, "Inferences executed (batch items, not requests).", LABELS)
EXECUTIONS = lean.Counter(names.INFERENCE_EXEC_COUNT, "Model executions (batches).", LABELS)
IN_FLIGHT = lean.Gauge(names.INFERENCE_IN_FLIGHT, "Requests queued or executing.", LABELS)
QUEUE_DEPTH = lean.Gauge(names.INFERENCE_QUEUE_DEPTH, "Requests waiting in the queue (the autoscaling signal).", LABELS)
MODEL_STATE = Gauge(
    names.MODEL_STATE, "1 for the current state of a model version, 0 for the others.", [*LABELS, "state"]
)
DECODES_IN_WORKER = Gauge(
    names.INFERENCE_LARGE_DECODES,
    "Large JSON request bodies in the decoder process or waiting for it (one is decoded at a time).",
)
EXECUTION_FAILURES = Counter(
    names.MODEL_EXECUTION_FAILURES,
    "Model executions (batches) that failed inside the server (answered 500); input errors are not counted.",
    LABELS,
)
HEALTHY = Gauge(
    names.MODEL_HEALTHY,
    "1 while a serving version's recent executions mostly succeed, 0 while it is failing (see health.py).",
    LABELS,
)
LOAD_FAILURES = Counter(names.MODEL_LOAD_FAILURES, "Failed loads of a model version.", LABELS)
EXECUTION_PROVIDER = Gauge(
    names.MODEL_EXECUTION_PROVIDER,
    "1 per onnxruntime execution provider a loaded model version really runs on (session.get_providers()).",
    [*LABELS, "provider"],
)


_PROVIDERS_SET: dict[tuple[str, str], list[str]] = {}


def set_providers(model: str, version: str, providers: list[str]) -> None:
    """What a (re)loaded version runs on; a provider it no longer uses goes away."""
    clear_providers(model, version)
    for provider in providers:
        EXECUTION_PROVIDER.labels(model, version, provider).set(1)
    _PROVIDERS_SET[(model, version)] = list(providers)


def clear_providers(model: str, version: str) -> None:
    for provider in _PROVIDERS_SET.pop((model, version), []):
        EXECUTION_PROVIDER.remove(model, version, provider)


def set_state(model: str, version: str, state: str) -> None:
    for candidate in STATES:
        MODEL_STATE.labels(model, version, candidate).set(1 if candidate == state else 0)


class VersionMetrics:
    """Pre-bound label children of one model version (labels() costs a dict lookup and a lock)."""

    __slots__ = (
        "batch_size",
        "compute",
        "execution_failures",
        "executions",
        "healthy",
        "in_flight",
        "inferences",
        "outcome",
        "queue_depth",
        "queue_time",
        "request_time",
        "stats",
    )

    def __init__(self, model: str, version: str) -> None:
        self.outcome = {o: REQUESTS.labels(model, version, o) for o in OUTCOMES}
        self.request_time = REQUEST_DURATION.labels(model, version)
        self.queue_time = QUEUE_DURATION.labels(model, version)
        self.compute = COMPUTE_DURATION.labels(model, version)
        self.batch_size = BATCH_SIZE.labels(model, version)
        self.inferences = INFERENCES.labels(model, version)
        self.executions = EXECUTIONS.labels(model, version)
        self.execution_failures = EXECUTION_FAILURES.labels(model, version)
        self.healthy = HEALTHY.labels(model, version)
        self.healthy.set(1)
        self.in_flight = IN_FLIGHT.labels(model, version)
        self.queue_depth = QUEUE_DEPTH.labels(model, version)
        self.stats = VersionStats()  # Triton's statistics extension (cumulative ns)
