"""The SLO gate: a run's figures against the route's SLO from mesh.yaml. Pure; the locustfile feeds it.

Throughput is judged against the load the run offered: a paced run (each user capped at
LOADTEST_RPS_PER_USER) offers users x rate requests/s; when that is below the SLO's minimum the check
is skipped (the run cannot show it), and otherwise the service passes when it served the minimum or
KEEP_UP of what was offered (a paced 4 x 25 req/s run serving 96.6 req/s kept up; the ramp-up and the
pacing's granularity are the generator's, not the service's). An unpaced run offers whatever the
service answers, so the minimum applies as written.

Overrides for experiments and CI (never edit the spec for a test): LOADTEST_SLO_P95, LOADTEST_SLO_P99
(durations like "50ms"), LOADTEST_SLO_ERROR_BUDGET (ratio), LOADTEST_SLO_MIN_THROUGHPUT (requests/s).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mesh.spec import SLO, format_duration, parse_duration

KEEP_UP = 0.9  # share of the offered load a paced run must be served


@dataclass(frozen=True)
class Verdict:
    check: str
    bound: str
    observed: str
    passed: bool
    skipped: bool = False  # not judged by this run (it passes the gate; the table says SKIP)

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.passed else "FAIL"


@dataclass(frozen=True)
class RunFigures:
    requests: int
    failures: int
    p95_s: float
    p99_s: float
    rps: float
    offered_rps: float | None = None  # a paced run's offered load; None: unpaced (as fast as answered)

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def apply_overrides(slo: SLO, env: Mapping[str, str] = os.environ) -> SLO:
    changes: dict[str, object] = {}
    if "LOADTEST_SLO_P95" in env:
        changes["p95_latency"] = parse_duration(env["LOADTEST_SLO_P95"])
    if "LOADTEST_SLO_P99" in env:
        changes["p99_latency"] = parse_duration(env["LOADTEST_SLO_P99"])
    if "LOADTEST_SLO_ERROR_BUDGET" in env:
        changes["error_budget"] = float(env["LOADTEST_SLO_ERROR_BUDGET"])
    if "LOADTEST_SLO_MIN_THROUGHPUT" in env:
        changes["min_throughput"] = float(env["LOADTEST_SLO_MIN_THROUGHPUT"])
    return slo.model_copy(update=changes) if changes else slo


def evaluate(slo: SLO | None, run: RunFigures) -> list[Verdict]:
    """One verdict per SLO bound; with no SLO for the route, only "it answered without failures"."""
    if slo is None:
        return [Verdict("failures", "0", str(run.failures), run.requests > 0 and run.failures == 0)]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f}ms"

    return [
        Verdict("requests", "> 0", str(run.requests), run.requests > 0),
        Verdict("p95 latency", f"<= {format_duration(slo.p95_latency)}", ms(run.p95_s), run.p95_s <= slo.p95_latency),
        Verdict("p99 latency", f"<= {format_duration(slo.p99_latency)}", ms(run.p99_s), run.p99_s <= slo.p99_latency),
        Verdict(
            "error rate", f"<= {slo.error_budget:.4%}", f"{run.fail_ratio:.4%}", run.fail_ratio <= slo.error_budget
        ),
        throughput(slo.min_throughput, run),
    ]


def throughput(minimum: float, run: RunFigures) -> Verdict:
    """The served rate against the minimum, or against the offered load for a paced run (module docstring)."""
    bound = f">= {minimum:g} req/s"
    if run.offered_rps is None:
        return Verdict("throughput", bound, f"{run.rps:.1f} req/s", run.rps >= minimum)
    offered = f"{run.rps:.1f} of {run.offered_rps:.1f} req/s offered"
    if run.offered_rps < minimum:
        why = f"{offered}: not judged, the run offered less than the bound (raise --users or --rps-per-user)"
        return Verdict("throughput", bound, why, True, skipped=True)
    served = run.rps >= min(minimum, KEEP_UP * run.offered_rps)
    return Verdict("throughput", f"{bound} (or {KEEP_UP:.0%} of the offered load)", offered, served)


def table(title: str, verdicts: list[Verdict]) -> str:
    rows = [("check", "bound", "observed", "verdict")] + [(v.check, v.bound, v.observed, v.status) for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [title, *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)]
    lines.insert(2, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
