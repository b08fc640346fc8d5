"""The local console: a small web page, served by `meshserve up`, that draws the panels users need
(requests by route and version, the split against the configured weights, latency percentiles, errors
and sheds, queue depth and batch size per version, ejections, a canary's agreement and step) live from
the local Prometheus.

One source, two renderers: its panels are the Grafana dashboards' own (observability/build_dashboards.py,
picked in observability/console/panels.py), drawn with uPlot (MIT, shipped in static/, no CDN: the page
works offline). It runs as one supervised process of the stack (`processes(stack)`, the hook in
services/local/commands.py's EXTRA_PROCESS_MODULES) on a free port; `up` prints its URL.
"""

from __future__ import annotations

import sys
from typing import Any

SERVICE = "console"
# npm `uplot` (MIT, static/UPLOT-LICENSE): its dist/uPlot.iife.min.js and uPlot.min.css, as `npm pack
# uplot@1.6.32` gives them, are static/'s. To update: npm pack uplot@<version>, copy those two files and
# the LICENSE, change this pin (a test checks the shipped file carries it).
UPLOT_VERSION = "1.6.32"


def processes(stack: Any) -> list[Any]:
    """The supervisor hook: the console, reading the stack's spec and its Prometheus's URL file. Nothing
    when the stack runs no Prometheus (no binary, or MESHSERVE_PROMETHEUS=off): it would have nothing to draw."""
    from observability.prometheus import DEFAULT_SCRAPE_INTERVAL, SCRAPE_INTERVAL_ENV, find_binary
    from services.local.plan import ProcessSpec
    from services.local.supervisor import free_port

    if find_binary() is None:
        return []
    port = free_port()
    argv = (
        sys.executable, "-m", "observability.console",
        "--run-dir", str(stack.run_dir), "--spec", str(stack.spec_path), "--port", str(port),
        "--scrape-interval", stack.env.get(SCRAPE_INTERVAL_ENV, DEFAULT_SCRAPE_INTERVAL),
    )  # fmt: skip
    return [ProcessSpec(SERVICE, f"{SERVICE}-0", argv, port, "/healthz", discoverable=False)]
