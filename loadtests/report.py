"""Latency over time as a PNG, from Locust's `<prefix>_stats_history.csv` (matplotlib, no display)."""

from __future__ import annotations

import csv
from pathlib import Path


def _float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number else None  # drop NaN


def read_history(path: Path) -> dict[str, list[float | None]]:
    """Aggregated rows of the history CSV: seconds since start, users, rps, p50/p95/p99 (ms)."""
    series: dict[str, list[float | None]] = {k: [] for k in ("t", "users", "rps", "p50", "p95", "p99")}
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("Name") == "Aggregated"]
    if not rows:
        return series
    start = float(rows[0]["Timestamp"])
    for row in rows:
        series["t"].append(float(row["Timestamp"]) - start)
        series["users"].append(_float(row["User Count"]))
        series["rps"].append(_float(row["Requests/s"]))
        for key, column in (("p50", "50%"), ("p95", "95%"), ("p99", "99%")):
            series[key].append(_float(row[column]))
    return series


def plot_latency(history_csv: Path, out_png: Path, *, title: str, slo_ms: dict[str, float] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_history(history_csv)
    fig, ax = plt.subplots(figsize=(10, 5))
    for key in ("p50", "p95", "p99"):
        ax.plot(series["t"], series[key], label=key)
    for name, bound in (slo_ms or {}).items():
        ax.axhline(bound, linestyle="--", linewidth=1, color="grey")
        ax.annotate(f"SLO {name} {bound:g} ms", (0, bound), fontsize=8, va="bottom")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("response time (ms)")
    ax.set_title(title)
    rate = ax.twinx()
    rate.plot(series["t"], series["rps"], color="black", alpha=0.3, label="requests/s")
    rate.set_ylabel("requests/s")
    ax.legend(loc="upper left")
    rate.legend(loc="upper right")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
