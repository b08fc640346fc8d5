"""observability/METRICS.md lists every metric the services register, and the docs cite only metrics
that exist (the names: services/common/metric_names.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client import REGISTRY

import services.common.telemetry
import services.gateway.metrics
import services.modelserver.metrics
import services.pipeline.shadow  # noqa: F401  (importing registers the metrics)
from services.common import metric_names

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "observability" / "METRICS.md"
CITED = re.compile(r"`(meshserve_[a-z0-9_]+)(\*?)")  # `name`, `name{labels}`, or a family `prefix_*`


def defined() -> set[str]:
    return {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}


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


def test_every_defined_name_has_a_catalog_row() -> None:
    text = CATALOG.read_text()
    missing = sorted(name for name in defined() if f"| `{name}` |" not in text)
    assert not missing, f"add a row to observability/METRICS.md: {missing}"


def cited_unknown(text: str, names: set[str]) -> list[str]:
    """Metric names cited in backticks that no metric has (a histogram's `_bucket`/`_count`/`_sum`
    series and a `prefix_*` family count when a metric has them)."""
    unknown = []
    for match in CITED.finditer(text):
        name, family = match.groups()
        if family:
            known = any(n.startswith(name) for n in names)
        else:
            known = re.sub(r"_(bucket|count|sum)$", "", name) in names or name in names
        if not known:
            unknown.append(name + family)
    return unknown


def test_the_docs_cite_only_metrics_that_exist() -> None:
    docs = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    unknown = {doc: cited_unknown((ROOT / doc).read_text(), defined()) for doc in docs}
    unknown = {doc: names for doc, names in unknown.items() if names}
    assert not unknown, f"these docs cite metrics that do not exist (renamed?): {unknown}"


def test_a_renamed_metric_in_the_docs_is_caught() -> None:
    names = {"meshserve_inference_requests_total", "meshserve_inference_request_duration_seconds"}
    text = (
        "`meshserve_inference_requests_total{model}`, `meshserve_inference_request_duration_seconds_bucket`, "
        "`meshserve_inference_*`, `meshserve_infer_requests_total`, `meshserve_gateway_*`"
    )
    assert cited_unknown(text, names) == ["meshserve_infer_requests_total", "meshserve_gateway_*"]
