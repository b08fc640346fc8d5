"""The local console: a small web page, served by `meshserve up`, that draws the panels users need
(requests by route and version, the split against the configured weights, latency percentiles, errors
and sheds, queue depth and batch size per version, ejections, a canary's agreement and step) live from
the local Prometheus.

One source, two renderers: its panels are the Grafana dashboards' own (mesh/compile/dashboards.py,
picked in observability/console/panels.py), drawn with uPlot (MIT, shipped in static/, no CDN: the page
works offline). It runs as one supervised process of the stack (services/local/observers.py adds it)
on a free port; `up` prints its URL.
"""

from __future__ import annotations

SERVICE = "console"
# npm `uplot` (MIT, static/UPLOT-LICENSE): its dist/uPlot.iife.min.js and uPlot.min.css, as `npm pack
# uplot@1.6.32` gives them, are static/'s. To update: npm pack uplot@<version>, copy those two files and
# the LICENSE, change this pin (a test checks the shipped file carries it).
UPLOT_VERSION = "1.6.32"
