"""The console's web server: the page, its static files, and the panels' data from the local Prometheus.

The page asks `/api/panel/<id>`; the server runs that panel's PromQL targets (observability.console.panels,
from the dashboards' own definitions) as range queries against Prometheus's HTTP API and answers the
series with their legends. So the browser talks to one origin (no CORS), and only the dashboards'
queries reach Prometheus through it, never arbitrary PromQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from mesh.spec import MeshSpec, SpecError, load_spec
from observability.console.panels import Panel, console_panels, legend, rate_interval
from observability.prometheus import URL_FILE
from services.common.files import file_identity

STATIC = Path(__file__).with_name("static")
STATIC_FILES = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "UPLOT-LICENSE": "text/plain",
}
MAX_POINTS = 720  # per series: a 1 h window at 5 s steps
MAX_SECONDS = 24 * 3600


class BadQuery(ValueError):
    """A request parameter out of range: answered 400 naming it."""


def window(params: dict[str, str], now: float, scrape_s: float) -> tuple[float, float, float]:
    """(start, end, step) from `?seconds=` (default 600) and `?step=` (default: seconds / 240, at least
    the scrape interval); refuses what is not a number or out of range."""
    try:
        seconds = float(params.get("seconds", "600"))
        step = float(params["step"]) if "step" in params else max(seconds / 240, scrape_s)
    except ValueError:
        raise BadQuery("seconds and step must be numbers (of seconds)") from None
    if not (math.isfinite(seconds) and 10 <= seconds <= MAX_SECONDS):
        raise BadQuery(f"seconds={params.get('seconds')}: between 10 and {MAX_SECONDS}")
    if not (math.isfinite(step) and step >= 1 and seconds / step <= MAX_POINTS):
        raise BadQuery(f"step={step:g}: at least 1 s and at most {MAX_POINTS} points in the window")
    return now - seconds, now, step


def spec_summary(spec: MeshSpec) -> list[dict[str, Any]]:
    """Per model: versions, the weights the spec asks for, the stable version, the canary step, the mirror."""
    models = []
    for name, model in spec.models.items():
        weights = model.weights()
        stable = model.stable_version()
        canaries = {v: w for v, w in weights.items() if v != stable and w > 0}
        mirror = model.traffic.mirror if model.traffic is not None else None
        models.append(
            {
                "model": name,
                "weights": {str(v): w for v, w in weights.items()},
                "stable": stable,
                "canary": [{"version": v, "weight": w} for v, w in sorted(canaries.items())],
                "mirror": None if mirror is None else {"version": mirror.version, "percentage": mirror.percentage},
            }
        )
    return models


class Console:
    """State of one console: the spec (re-read when mesh.yaml changes) and where Prometheus is."""

    def __init__(self, spec_path: Path, run_dir: Path | None, scrape_s: float, prometheus: str | None = None) -> None:
        self.spec_path, self.run_dir, self.scrape_s, self.fixed_prometheus = spec_path, run_dir, scrape_s, prometheus
        self._identity: object = None
        self.spec: MeshSpec | None = None
        self.panels: dict[str, Panel] = {}
        self.spec_error: str | None = None

    def refresh(self) -> None:
        identity = file_identity(self.spec_path)
        if identity == self._identity and self.spec is not None:
            return
        self._identity = identity
        try:
            spec = load_spec(self.spec_path, check_repository=False)
        except SpecError as exc:  # keep drawing the last good spec; say why the new one is not used
            self.spec_error = str(exc)
            return
        self.spec, self.spec_error = spec, None
        self.panels = {p.id: p for p in console_panels(spec)}

    def prometheus(self) -> str | None:
        """--prometheus, else the URL the stack's Prometheus wrote into the run dir (it may start later)."""
        if self.fixed_prometheus:
            return self.fixed_prometheus
        if self.run_dir is None:
            return None
        try:
            return (self.run_dir / URL_FILE).read_text().strip() or None
        except OSError:
            return None


async def _range(client: httpx.AsyncClient, base: str, expr: str, start: float, end: float, step: float) -> Any:
    reply = await client.get(
        f"{base}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step}
    )
    body = reply.json()
    if reply.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(body.get("error", f"HTTP {reply.status_code}"))
    return body["data"]["result"]


def _finite(value: str) -> float | None:
    """Prometheus writes NaN/Inf as strings (a ratio over no traffic): a gap in the chart, not JSON NaN."""
    number = float(value)
    return number if math.isfinite(number) else None


def build_app(console: Console) -> Starlette:
    client = httpx.AsyncClient(timeout=10)

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return JSONResponse({"error": f"no static file {name!r}"}, 404)
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def panels(_: Request) -> Response:
        console.refresh()
        if console.spec is None:
            return JSONResponse({"error": f"mesh spec {console.spec_path}: {console.spec_error}"}, 503)
        return JSONResponse(
            {
                "panels": [p.as_json() for p in console.panels.values()],
                "models": spec_summary(console.spec),
                "prometheus": console.prometheus(),
                "spec": str(console.spec_path),
                "spec_error": console.spec_error,
                "scrape_interval_s": console.scrape_s,
            }
        )

    async def panel_data(request: Request) -> Response:
        console.refresh()
        panel = console.panels.get(request.path_params["id"])
        if panel is None:
            return JSONResponse({"error": f"no panel {request.path_params['id']!r}; see /api/panels"}, 404)
        try:
            start, end, step = window(dict(request.query_params), time.time(), console.scrape_s)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 400)
        base = console.prometheus()
        if base is None:
            return JSONResponse({"error": "the local Prometheus is not running (yet)"}, 503)
        interval = rate_interval(step, console.scrape_s)
        exprs = [t.expr.replace("$__rate_interval", interval) for t in panel.targets]
        try:
            results = await asyncio.gather(*(_range(client, base, e, start, end, step) for e in exprs))
        except (httpx.HTTPError, ValueError, RuntimeError) as exc:
            return JSONResponse({"error": f"Prometheus at {base}: {exc}"}, 502)
        series = []
        for target, result in zip(panel.targets, results, strict=True):
            for item in result:
                values = [[float(t), _finite(v)] for t, v in item["values"]]
                labelled = bool(item["metric"])  # not an idle counter's `or vector(0)`
                series.append({"name": legend(target.legend, item["metric"]), "labelled": labelled, "values": values})
        return JSONResponse({"id": panel.id, "start": start, "end": end, "step": step, "series": series})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/static/{name}", static),
            Route("/api/panels", panels),
            Route("/api/panel/{id}", panel_data),
        ],
        lifespan=lifespan,
    )
