"""The Grafana dashboards (JSON under observability/dashboards/) and their queries.

`load_dashboards()` is what the infra code wraps into Grafana sidecar ConfigMaps;
`panel_queries()` lists every panel query with template variables filled in, so tests can run
them against a real Prometheus (no Grafana binary exists here).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).with_name("dashboards")


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """File name (e.g. "gateway.json") -> dashboard JSON model."""
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def panel_queries(
    dashboard: dict[str, Any], variables: dict[str, str], rate_interval: str = "1m"
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with `$var`/`${var}` and `$__rate_interval` substituted."""
    values = {"__rate_interval": rate_interval, **variables}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"dashboard {dashboard.get('uid')}: no value given for template variable ${name}")
        return values[name]

    queries = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            expr = re.sub(r"\$\{(\w+)\}|\$(\w+)", fill, target["expr"])
            queries.append((panel["title"], expr))
    return queries
