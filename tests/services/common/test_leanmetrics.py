"""The lean metrics read on /metrics exactly as prometheus_client's own would, for the same updates."""

from __future__ import annotations

import random
import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PCounter
from prometheus_client import Gauge as PGauge
from prometheus_client import Histogram as PHistogram

from services.common import leanmetrics as lean

BUCKETS = (0.0005, 0.001, 0.01, 0.1, 1.0, 10.0)


def _exposition(registry: CollectorRegistry) -> str:
    """The text format with the `_created` timestamps (creation times) blanked."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_same_updates_same_exposition() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    metrics = [
        (
            lean.Counter("t_requests_total", "Requests.", ["model", "outcome"], registry=ours),
            lean.Histogram("t_duration_seconds", "Duration.", ["model"], buckets=BUCKETS, registry=ours),
            lean.Gauge("t_depth", "Depth.", ["model"], registry=ours),
        ),
        (
            PCounter("t_requests_total", "Requests.", ["model", "outcome"], registry=theirs),
            PHistogram("t_duration_seconds", "Duration.", ["model"], buckets=BUCKETS, registry=theirs),
            PGauge("t_depth", "Depth.", ["model"], registry=theirs),
        ),
    ]
    rng = random.Random(7)
    # values on the bucket bounds too: `le` is inclusive
    values = [*BUCKETS, 0.0, 1e-9, 0.3, 20.0, *(rng.uniform(0, 12) for _ in range(500))]
    for i, value in enumerate(values):
        model, outcome = rng.choice("ab"), rng.choice(["success", "error"])
        for counter, histogram, gauge in metrics:
            counter.labels(model, outcome).inc()
            histogram.labels(model).observe(value)
            gauge.labels(model).inc(2)
            if i % 3 == 0:
                gauge.labels(model).dec()
            if i % 50 == 0:
                gauge.labels("c").set(i)
    assert _exposition(ours) == _exposition(theirs)
    assert 't_duration_seconds_bucket{le="0.001",model="a"}' in _exposition(ours)


def test_removed_children_leave_the_exposition() -> None:
    registry = CollectorRegistry()
    counter = lean.Counter("t_total", "T.", ["v"], registry=registry)
    counter.labels("1").inc()
    counter.labels("2").inc()
    counter.remove("1")
    text = generate_latest(registry).decode()
    assert 't_total{v="2"} 1.0' in text and 'v="1"' not in text


def test_a_name_registered_twice_is_refused_like_prometheus_client() -> None:
    registry = CollectorRegistry()
    PHistogram("t_seconds", "T.", ["v"], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        lean.Histogram("t_seconds", "T.", ["v"], buckets=BUCKETS, registry=registry)


def test_wrong_label_count_is_an_error() -> None:
    counter = lean.Counter("t_total", "T.", ["a", "b"], registry=None)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("only-one")
