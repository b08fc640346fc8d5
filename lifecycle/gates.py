"""The publish gates: pure functions from measured figures and the contract's bounds to verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lifecycle.contract import Gates


@dataclass(frozen=True)
class Figures:
    """What a candidate is judged on (NaN: could not be measured, e.g. no stable version to compare with)."""

    metric: str
    value: float  # the candidate's metric (accuracy, or agreement with the stable version)
    stable_value: float
    agreement: float  # top-1 agreement with the stable version
    latency_ms: float  # batch 1, one thread: compute (thread CPU) time
    baseline_latency_ms: float


@dataclass(frozen=True)
class GateResult:
    name: str
    bound: str
    observed: str
    passed: bool


def judge(f: Figures, gates: Gates) -> list[GateResult]:
    """One verdict per configured gate. A comparison without a stable version to compare with passes
    with "no stable version" (a model's first version); a NaN of the candidate's own never passes."""
    results = []
    if gates.min_metric is not None:
        if f.metric == "agreement" and math.isnan(f.agreement):  # agreement needs a version to agree with
            results.append(GateResult("agreement floor", f">= {gates.min_metric:.4f}", "no stable version", True))
        else:
            ok = not math.isnan(f.value) and f.value >= gates.min_metric
            results.append(GateResult(f"{f.metric} floor", f">= {gates.min_metric:.4f}", _num(f.value), ok))
    if gates.max_drop is not None and f.metric == "accuracy":
        if math.isnan(f.stable_value):
            results.append(GateResult("drop against stable", f"<= {gates.max_drop:.4f}", "no stable version", True))
        else:
            drop = f.stable_value - f.value
            bound = f"<= {gates.max_drop:.4f} (stable {f.stable_value:.4f})"
            results.append(GateResult("drop against stable", bound, f"{drop:.4f}", drop <= gates.max_drop + 1e-12))
    if gates.min_agreement is not None:
        if math.isnan(f.agreement):
            results.append(
                GateResult("top-1 agreement with stable", f">= {gates.min_agreement:.4f}", "no stable version", True)
            )
        else:
            ok = f.agreement >= gates.min_agreement
            results.append(
                GateResult("top-1 agreement with stable", f">= {gates.min_agreement:.4f}", f"{f.agreement:.4f}", ok)
            )
    if gates.max_latency_ratio is not None:
        if math.isnan(f.baseline_latency_ms):
            results.append(
                GateResult("batch-1 latency", f"<= {gates.max_latency_ratio}x baseline", "no baseline", True)
            )
        else:
            bound_ms = f.baseline_latency_ms * gates.max_latency_ratio
            ok = f.latency_ms <= bound_ms
            bound = f"<= {bound_ms:.3f}ms CPU ({gates.max_latency_ratio}x baseline {f.baseline_latency_ms:.3f}ms)"
            results.append(GateResult("batch-1 latency", bound, f"{f.latency_ms:.3f}ms", ok))
    return results


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
