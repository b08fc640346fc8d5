"""observability/METRICS.md lists every metric the services register."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

import services.common.telemetry
import services.gateway.metrics
import services.modelserver.metrics
import services.pipeline.business
import services.pipeline.shadow  # noqa: F401  (importing registers the metrics)

CATALOG = Path(__file__).resolve().parents[2] / "observability" / "METRICS.md"


def test_every_registered_metric_is_in_the_catalog() -> None:
    text = CATALOG.read_text()
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("meshserve_")}
    assert len(names) >= 20
    missing = []
    for name in sorted(names):
        # prometheus-client strips `_total` from a counter family's name
        if f"`{name}`" not in text and f"`{name}_total`" not in text:
            missing.append(name)
    assert not missing, f"add to observability/METRICS.md: {missing}"
