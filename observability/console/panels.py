"""Which dashboard panels the local console shows, with the template variables filled from the spec.

The console draws panels of the Grafana dashboards themselves (mesh/compile/dashboards.py's
models, built from the live spec): PICKS names them by dashboard and title, so a panel changed there
changes here, and a test fails if a pick no longer exists. Pure functions: spec in, panel list out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mesh.compile.dashboards import build, canary_pair
from mesh.spec import MeshSpec

# (dashboard file, panel title): what users need while they work, in page order.
PICKS: tuple[tuple[str, str], ...] = (
    ("gateway.json", "Requests by route and version"),
    ("canary-comparison.json", "Traffic share vs configured weight (shares include mirrored calls)"),
    ("service-overview.json", "Latency by route (p50 / p95 / p99)"),
    ("service-overview.json", "Error rate (failed share) by route"),
    ("model-serving.json", "Requests by version and outcome"),
    ("gateway.json", "Rejected (pending overflow, no healthy host)"),
    ("model-serving.json", "In flight and queued"),
    ("model-serving.json", "Mean batch size (inferences / executions)"),
    ("gateway.json", "Outlier ejections"),
    ("canary-comparison.json", "Top-1 agreement of mirrored answers (local stack: gateway and business APIs compare)"),
    ("canary-comparison.json", "Canary step: the canary's configured weight (local stack)"),
)


@dataclass(frozen=True)
class Target:
    expr: str  # with $__rate_interval still in it: the step decides it per query
    legend: str


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    dashboard: str
    unit: str
    targets: tuple[Target, ...]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "dashboard": self.dashboard, "unit": self.unit}


def variables(spec: MeshSpec, dashboard: str) -> dict[str, str]:
    """The values the console gives a dashboard's variables: every route, model and version (model
    serving matches `model=~"$model"`), and on the canary dashboard the spec's canary pair."""
    model, stable, canary = canary_pair(spec)
    everything = ".*" if dashboard == "model-serving.json" else model
    return {"route": ".*", "model": everything, "version": ".*", "stable": str(stable), "canary": str(canary)}


def fill(expr: str, values: dict[str, str]) -> str:
    """`$var` / `${var}` replaced; `$__rate_interval` (and other `$__` names) left for the query time."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name.startswith("__"):
            return match.group(0)
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def console_panels(spec: MeshSpec) -> list[Panel]:
    """PICKS from the spec's dashboards; KeyError naming the pick when a dashboard lost the panel."""
    dashboards = build(spec)
    panels = []
    for i, (name, title) in enumerate(PICKS):
        values = variables(spec, name)
        found = [p for p in dashboards[name]["panels"] if p.get("title") == title]
        if not found:
            raise KeyError(f"console pick {name} / {title!r}: no such panel in the dashboard")
        panel = found[0]
        unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit", "short")
        targets = tuple(
            Target(fill(t["expr"], values), fill(t.get("legendFormat", ""), values)) for t in panel["targets"]
        )
        panels.append(Panel(f"p{i + 1}", title, name, unit, targets))
    return panels


def rate_interval(step_s: float, scrape_s: float) -> str:
    """Grafana's $__rate_interval: max(step + scrape interval, 4 scrape intervals), whole seconds."""
    return f"{max(int(step_s + scrape_s), int(4 * scrape_s), 1)}s"


def legend(template: str, labels: dict[str, str]) -> str:
    """A Grafana legend format (`{{route}} v{{version}}`) with a series' labels; its labels when empty.
    A legend left empty is the unlabelled `or vector(0)` of an event counter: nothing has happened yet."""
    if template:
        text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()
    else:
        text = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return text or "none so far"
