"""Automated canary analysis: `meshserve canary advance digits v2 --steps 5,25,50,100 [--hold 30s]`.

At each step the canary's weight is set (mesh/canary.py's `set_weights`, written through its
validated atomic `apply_to_file`), traffic is mirrored to the other version (`traffic.mirror`, 100%:
the stable's answers are shadowed on the canary; at 100% the canary's on the stable), and after the
hold Prometheus compares canary against stable over the hold window: error ratio and p95 latency
from the model servers' `meshserve_inference_*`, and top-1 agreement on the same inputs from the
gateway's `meshserve_gateway_mirror_agreement_total`. Every step passing promotes the canary;
the first breach (or a step without enough data to judge) rolls back to the stable version.
The original mirror setting is restored either way, and a JSON + Markdown report records each
step's figures. The PromQL is observability/queries.py's, so a cluster's Prometheus serves too.

Like Flagger and Argo Rollouts it shifts and judges; unlike them it compares predictions.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mesh import canary
from mesh.spec import format_duration, parse_duration, parse_version, read_yaml
from observability import queries

PROMETHEUS_URL_ENV = "MESHSERVE_PROMETHEUS_URL"


@dataclass(frozen=True)
class Thresholds:
    max_error_increase: float = 0.01  # canary error ratio may exceed the stable's by this much
    max_latency_ratio: float = 1.5  # canary p95 <= stable p95 x this ...
    latency_slack_s: float = 0.005  # ... or + this, whichever is larger (sub-ms models are noisy)
    min_agreement: float = 0.95  # top-1 agreement on mirrored inputs
    min_requests: int = 10  # canary requests within the window, else "not enough data"
    min_compared: int = 10  # mirrored comparisons within the window


@dataclass(frozen=True)
class Figures:
    stable_requests: float
    canary_requests: float
    stable_error_ratio: float
    canary_error_ratio: float
    stable_p95_s: float
    canary_p95_s: float
    agreement: float
    compared: float


@dataclass(frozen=True)
class Check:
    name: str
    bound: str
    observed: str
    passed: bool


@dataclass
class Step:
    weight: int
    mirror_to: int
    window: str
    figures: Figures
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass
class Report:
    model: str
    stable: int
    canary: int
    steps_planned: list[int]
    hold: str
    thresholds: Thresholds
    steps: list[Step] = field(default_factory=list)
    outcome: str = "running"  # promoted | rolled back


# --------------------------------------------------------------------------- pure part


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--steps {text!r}: write weights like 5,25,50,100") from None
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise ValueError(f"--steps {text!r}: increasing weights in 1..100, e.g. 5,25,50,100")
    return steps


def set_mirror(doc: Any, model: str, mirror: dict[str, Any] | None) -> Any:
    """A copy of `doc` whose model has `traffic.mirror` = `mirror` (None removes it)."""
    from ruamel.yaml.comments import CommentedMap

    new = copy.deepcopy(doc)
    traffic = new["models"][model].get("traffic")
    if traffic is None:
        traffic = new["models"][model]["traffic"] = CommentedMap()
    if mirror is None:
        traffic.pop("mirror", None)
    else:
        flow = CommentedMap(mirror)
        flow.fa.set_flow_style()
        traffic["mirror"] = flow
    return new


def current_mirror(doc: Any, model: str) -> dict[str, Any] | None:
    mirror = ((doc["models"][model] or {}).get("traffic") or {}).get("mirror")
    return None if mirror is None else dict(mirror)


def step_edit(model: str, stable: int, canary_version: int, weight: int) -> Callable[[Any], Any]:
    """The step's spec edit: the canary's weight, and mirroring to the version not carrying the traffic."""
    mirror_to = stable if weight == 100 else canary_version

    def edit(doc: Any) -> Any:
        doc = canary.set_weights(doc, model, {canary_version: weight})
        return set_mirror(doc, model, {"version": mirror_to, "percentage": 100})

    return edit


def final_edit(model: str, version: int, mirror: dict[str, Any] | None) -> Callable[[Any], Any]:
    """All traffic to `version`, the mirror as it was before the analysis."""

    def edit(doc: Any) -> Any:
        return set_mirror(canary.promote(doc, model, version), model, mirror)

    return edit


def window_for(hold_s: float) -> str:
    return f"{max(2, math.ceil(hold_s))}s"


def promql(model: str, stable: int, canary_version: int, window: str) -> dict[str, str]:
    """The figures' queries (observability/queries.py's building blocks)."""
    return {
        "stable_requests": queries.version_requests(model, stable, window),
        "canary_requests": queries.version_requests(model, canary_version, window),
        "stable_error_ratio": queries.version_error_ratio(model, stable, window),
        "canary_error_ratio": queries.version_error_ratio(model, canary_version, window),
        "stable_p95_s": queries.version_latency_quantile(model, stable, 0.95, window),
        "canary_p95_s": queries.version_latency_quantile(model, canary_version, 0.95, window),
        "agreement": queries.mirror_agreement(model, stable, canary_version, window),
        "compared": queries.mirror_compared(model, stable, canary_version, window),
    }


def judge(figures: Figures, limits: Thresholds) -> list[Check]:
    """Canary against stable. A NaN (no data) never passes: an unjudged step is not a healthy one."""

    def ok(value: float, test: Callable[[float], bool]) -> bool:
        return not math.isnan(value) and test(value)

    f = figures
    error_bound = (0 if math.isnan(f.stable_error_ratio) else f.stable_error_ratio) + limits.max_error_increase
    latency_bound = max(f.stable_p95_s * limits.max_latency_ratio, f.stable_p95_s + limits.latency_slack_s)
    if math.isnan(latency_bound):
        latency_text = "no stable data"
    else:
        latency_text = f"<= {latency_bound * 1000:.2f}ms (stable {f.stable_p95_s * 1000:.2f}ms)"
    return [
        Check(
            "canary requests",
            f">= {limits.min_requests}",
            f"{f.canary_requests:.0f}",
            ok(f.canary_requests, lambda v: v >= limits.min_requests),
        ),
        Check(
            "error ratio",
            f"<= {error_bound:.4f} (stable {f.stable_error_ratio:.4f})",
            f"{f.canary_error_ratio:.4f}",
            ok(f.canary_error_ratio, lambda v: v <= error_bound),
        ),
        Check(
            "p95 latency",
            latency_text,
            f"{f.canary_p95_s * 1000:.2f}ms",
            ok(f.canary_p95_s, lambda v: not math.isnan(latency_bound) and v <= latency_bound),
        ),
        Check(
            "mirrored comparisons",
            f">= {limits.min_compared}",
            f"{f.compared:.0f}",
            ok(f.compared, lambda v: v >= limits.min_compared),
        ),
        Check(
            "top-1 agreement",
            f">= {limits.min_agreement:.2%}",
            f"{f.agreement:.2%}",
            ok(f.agreement, lambda v: v >= limits.min_agreement),
        ),
    ]


def render_markdown(report: Report) -> str:
    lines = [
        f"# Canary analysis: {report.model} v{report.canary} against v{report.stable}",
        "",
        f"Outcome: **{report.outcome}**. Steps {report.steps_planned}, hold {report.hold} each.",
        "",
        "| step | mirror to | check | bound | observed | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for step in report.steps:
        for check in step.checks:
            verdict = "pass" if check.passed else "**FAIL**"
            lines.append(
                f"| {step.weight}% | v{step.mirror_to} | {check.name} | {check.bound} | {check.observed} | {verdict} |"
            )
    lines += ["", "Thresholds: " + ", ".join(f"{k}={v}" for k, v in asdict(report.thresholds).items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the edges


def query_scalar(prometheus: str, expr: str, timeout: float = 10.0) -> float:
    """One instant query -> a float (NaN for an empty vector); raises on an HTTP or PromQL error."""
    import httpx

    reply = httpx.get(f"{prometheus.rstrip('/')}/api/v1/query", params={"query": expr}, timeout=timeout)
    body = reply.json()
    if reply.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(f"Prometheus rejected {expr!r}: {body.get('error', reply.text)}")
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else math.nan


def measure(prometheus: str, model: str, stable: int, canary_version: int, window: str) -> Figures:
    values = {k: query_scalar(prometheus, q) for k, q in promql(model, stable, canary_version, window).items()}
    return Figures(**values)


def advance(
    spec_path: Path,
    model: str,
    canary_version: int,
    steps: list[int],
    *,
    hold_s: float,
    prometheus: str,
    limits: Thresholds = Thresholds(),
    settle_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> Report:
    """Run the analysis, leaving the spec promoted or rolled back; returns the report."""
    doc = read_yaml(spec_path)
    stable = canary.stable_version(doc, model)
    if stable == canary_version:
        raise canary.CanaryError(f"v{canary_version} is already the stable version of {model}: nothing to advance")
    canary.current_weights(doc, model)  # validates the model name
    original_mirror = current_mirror(doc, model)
    report = Report(model, stable, canary_version, steps, format_duration(hold_s), limits)
    window = window_for(hold_s)
    try:
        for weight in steps:
            canary.apply_to_file(spec_path, step_edit(model, stable, canary_version, weight))
            mirror_to = stable if weight == 100 else canary_version
            log(f"step {weight}%: v{canary_version} at {weight}%, mirrored to v{mirror_to}, hold {report.hold}")
            sleep(settle_s + hold_s)
            figures = measure(prometheus, model, stable, canary_version, window)
            step = Step(weight, mirror_to, window, figures, judge(figures, limits))
            report.steps.append(step)
            for check in step.checks:
                log(f"  {'pass' if check.passed else 'FAIL'}  {check.name}: {check.observed} (bound {check.bound})")
            if not step.passed:
                break
    finally:
        healthy = bool(report.steps) and len(report.steps) == len(steps) and report.steps[-1].passed
        winner = canary_version if healthy else stable
        canary.apply_to_file(spec_path, final_edit(model, winner, original_mirror))
        report.outcome = "promoted" if healthy else "rolled back"
        log(f"{report.outcome}: {model} v{winner} takes all the traffic")
    return report


def write_report(report: Report, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    for step, obj in zip(data["steps"], report.steps, strict=True):
        step["passed"] = obj.passed
    json_path, md_path = directory / "report.json", directory / "report.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def default_prometheus() -> str | None:
    """--prometheus, else MESHSERVE_PROMETHEUS_URL, else the URL the local stack's Prometheus wrote."""
    if os.environ.get(PROMETHEUS_URL_ENV):
        return os.environ[PROMETHEUS_URL_ENV]
    from observability.prometheus import URL_FILE

    url_file = Path(__file__).resolve().parents[1] / "runs" / "current" / URL_FILE  # `meshserve up`'s newest run
    return url_file.read_text().strip() if url_file.exists() else None


def _run(args: argparse.Namespace) -> int:
    from mesh.spec import SpecError

    prometheus = args.prometheus or default_prometheus()
    if not prometheus:
        print(
            f"meshserve canary advance: no Prometheus: pass --prometheus URL, set {PROMETHEUS_URL_ENV}, "
            "or start the local stack (`meshserve up`) with Debian's prometheus installed",
            file=sys.stderr,
        )
        return 2
    try:
        version = parse_version(args.version)
        steps = parse_steps(args.steps)
        hold = parse_duration(args.hold)
        report = advance(
            Path(args.spec),
            args.model,
            version,
            steps,
            hold_s=hold,
            prometheus=prometheus,
            limits=Thresholds(
                max_error_increase=args.max_error_increase,
                max_latency_ratio=args.max_latency_ratio,
                latency_slack_s=parse_duration(args.latency_slack),
                min_agreement=args.min_agreement,
                min_requests=args.min_requests,
                min_compared=args.min_compared,
            ),
        )
    except (canary.CanaryError, SpecError, ValueError) as exc:
        print(f"meshserve canary advance: {exc}", file=sys.stderr)
        return 2
    out = args.report or Path("runs") / f"canary-{args.model}-v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
    json_path, md_path = write_report(report, Path(out))
    print(f"report: {json_path} and {md_path}")
    return 0 if report.outcome == "promoted" else 1


def register_canary(ops: argparse._SubParsersAction) -> None:
    limits = Thresholds()
    parser = ops.add_parser(
        "advance",
        help="shift traffic to a canary step by step, judge it in Prometheus, promote or roll back",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("model")
    parser.add_argument("version", help="the canary version, e.g. v2")
    parser.add_argument("--steps", default="5,25,50,100", help="canary weights in order (default 5,25,50,100)")
    parser.add_argument("--hold", default="30s", help="time at each step before judging (the query window)")
    parser.add_argument(
        "--prometheus", default=None, help=f"Prometheus URL (default: ${PROMETHEUS_URL_ENV} or the local stack's)"
    )
    parser.add_argument("--max-error-increase", type=float, default=limits.max_error_increase)
    parser.add_argument("--max-latency-ratio", type=float, default=limits.max_latency_ratio)
    parser.add_argument(
        "--latency-slack",
        default=format_duration(limits.latency_slack_s),
        help="the canary's p95 may also exceed the stable's by this much (whichever bound is larger)",
    )
    parser.add_argument("--min-agreement", type=float, default=limits.min_agreement)
    parser.add_argument("--min-requests", type=int, default=limits.min_requests)
    parser.add_argument("--min-compared", type=int, default=limits.min_compared)
    parser.add_argument(
        "--report", type=Path, default=None, help="report folder (default runs/canary-<model>-v<N>-<time>)"
    )
    parser.set_defaults(func=_run)
