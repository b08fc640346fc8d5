"""A run's reports beyond Locust's own: the latency-over-time PNG and the SLO verdicts in report.html.

The PNG (matplotlib, no display) has three panels on one time axis, each on its own scale: latency
percentiles on a log axis (a 2 ms p50 and a 150 ms SLO bound are both readable; a linear axis scaled to
the SLO flattened the curves), with each SLO bound drawn and labelled on the line itself; requests/s
with failures/s on their own axis; and the user count. Legends sit outside the plotting area, so they
hide no line.
"""

from __future__ import annotations

import csv
import html
import re
from pathlib import Path
from typing import Any

SERIES = ("t", "users", "rps", "failures", "p50", "p95", "p99")
PERCENTILES = (("p50", "50%"), ("p95", "95%"), ("p99", "99%"))


def _float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number else None  # drop NaN


def read_history(path: Path) -> dict[str, list[float | None]]:
    """Aggregated rows of the history CSV: seconds since start, users, rps, failures/s, p50/p95/p99 (ms)."""
    series: dict[str, list[float | None]] = {k: [] for k in SERIES}
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("Name") == "Aggregated"]
    if not rows:
        return series
    start = float(rows[0]["Timestamp"])
    for row in rows:
        series["t"].append(float(row["Timestamp"]) - start)
        series["users"].append(_float(row["User Count"]))
        series["rps"].append(_float(row["Requests/s"]))
        series["failures"].append(_float(row.get("Failures/s", "")))
        for key, column in PERCENTILES:
            value = _float(row[column])
            series[key].append(value if value is None or value > 0 else None)  # log axis: no zeros
    return series


def latency_limits(series: dict[str, list[float | None]], slo_ms: dict[str, float]) -> tuple[float, float]:
    """The log axis's range: every percentile and every SLO bound inside, with a margin."""
    values = [v for key, _ in PERCENTILES for v in series[key] if v] + list(slo_ms.values())
    if not values:
        return 0.1, 1000.0
    return min(values) / 1.5, max(values) * 1.5


def latency_figure(series: dict[str, list[float | None]], *, title: str, slo_ms: dict[str, float] | None = None):
    """The three-panel matplotlib Figure (pure: no file written)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    slo_ms = slo_ms or {}
    fig = Figure(figsize=(11, 8), layout="constrained")
    latency, rate, users = fig.subplots(3, 1, sharex=True, height_ratios=[3, 2, 1])
    colors = {"p50": "tab:blue", "p95": "tab:orange", "p99": "tab:red"}
    for key, _ in PERCENTILES:
        latency.plot(series["t"], series[key], label=key, color=colors[key])
    latency.set_yscale("log")
    latency.set_ylim(*latency_limits(series, slo_ms))
    latency.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, 50 ... ms
    latency.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency.yaxis.set_minor_formatter(NullFormatter())
    latency.grid(True, which="major", alpha=0.3)
    for name, bound in slo_ms.items():
        color = colors.get(name, "grey")
        latency.axhline(bound, linestyle="--", linewidth=1.2, color=color, label=f"SLO {name} {bound:g} ms")
        latency.annotate(
            f"SLO {name} {bound:g} ms", (1.0, bound), xycoords=("axes fraction", "data"), xytext=(-4, 3),
            textcoords="offset points", ha="right", va="bottom", fontsize=8, color=color,
        )  # fmt: skip
    latency.set_ylabel("response time (ms, log)")
    latency.set_title(title)
    latency.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    rate.plot(series["t"], series["rps"], color="black", label="requests/s")
    rate.set_ylabel("requests/s")
    rate.set_ylim(bottom=0)
    failures = rate.twinx()
    failures.plot(series["t"], series["failures"], color="tab:red", label="failures/s")
    failures.set_ylabel("failures/s", color="tab:red")
    failures.set_ylim(bottom=0, top=max([f for f in series["failures"] if f] or [1.0]) * 1.2)
    rate.legend(
        handles=[*rate.get_lines(), *failures.get_lines()], loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=8
    )
    users.step(series["t"], series["users"], where="post", color="tab:green", label="users")
    users.set_ylabel("users")
    users.set_ylim(bottom=0)
    users.set_xlabel("seconds since start")
    return fig


def plot_latency(history_csv: Path, out_png: Path, *, title: str, slo_ms: dict[str, float] | None = None) -> Path:
    fig = latency_figure(read_history(history_csv), title=title, slo_ms=slo_ms)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def verdicts_html(verdicts: dict[str, Any]) -> str:
    """The gate's table as an HTML section (every value escaped)."""
    outcome = "PASS" if verdicts.get("passed") else "FAIL"
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(v[k]))}</td>" for k in ("check", "bound", "observed"))
        + (f'<td class="{status.lower()}">{status}</td></tr>')
        for v in verdicts.get("verdicts", [])
        for status in ["SKIP" if v.get("skipped") else "PASS" if v["passed"] else "FAIL"]
    )
    title = html.escape(f"SLO gate: {verdicts.get('suite', '')} {verdicts.get('route', '')}: {outcome}")
    style = (
        "#slo-gate{font-family:sans-serif;margin:1em}#slo-gate td,#slo-gate th{padding:2px 10px;text-align:left}"
        "#slo-gate .pass{color:#1a7f37}#slo-gate .fail{color:#cf222e;font-weight:bold}#slo-gate .skip{color:#777}"
    )
    return (
        f'<section id="slo-gate"><style>{style}</style><h2>{title}</h2><table>'
        f"<tr><th>check</th><th>bound</th><th>observed</th><th>verdict</th></tr>{rows}</table></section>"
    )


def add_verdicts_to_html(report_html: Path, verdicts: dict[str, Any]) -> None:
    """Put the verdicts at the top of Locust's report.html (written after the gate ran, so added here)."""
    text = report_html.read_text(encoding="utf-8")
    section = verdicts_html(verdicts)
    body = re.search(r"<body[^>]*>", text)
    text = f"{text[: body.end()]}{section}{text[body.end() :]}" if body else section + text
    report_html.write_text(text, encoding="utf-8")
