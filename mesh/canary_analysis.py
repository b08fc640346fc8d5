"""Automated canary analysis: `meshserve canary advance digits v2 --steps 5,25,50,100 [--hold 30s]`.

At each step the canary's weight is set (mesh/canary.py's `set_weights`, written through its
validated atomic `apply_to_file`), traffic is mirrored to the other version (`traffic.mirror`, 100%:
the stable's answers are shadowed on the canary; at 100% the canary's on the stable), and after the
hold Prometheus compares canary against stable: error ratio and p95 latency from the model
servers' `meshserve_inference_*`, and top-1 agreement on the same inputs from the comparers'
`meshserve_*_mirror_agreement_total` (see Agreement below). Every step passing promotes the canary (it
becomes `traffic.stable`); the first breach (or a step without enough data to judge) rolls back to the
stable version. The original mirror setting is restored either way, and a JSON + Markdown report
records each step's figures. The PromQL is mesh/compile/promql.py's, so a cluster's Prometheus
serves too.

Applying: locally the gateway watches mesh.yaml, so editing it is enough. On a cluster nothing
reads the file: `--apply CMD` (e.g. `pulumi up --yes --skip-preview`) runs through the shell after
every edit, the final one included, with MESHSERVE_SPEC naming the spec; it must exit 0, else the
analysis stops, rolls the spec back and runs CMD once more to apply the rollback.

Windows: Prometheus only knows what it has scraped. After each shift the analysis waits a settle
of at least two scrape intervals (the last sample of the old weights is then behind the window),
then judges over a window of at least four scrape intervals (the rule of thumb for rate(): enough
samples even with a missed scrape), or the hold if longer. The scrape interval is refused above
5 minutes: a 20-minute window per step is no longer a canary step.

Agreement: on the local stack both routes compare: the embedded gateway the mirrored /v2 infer calls
(`meshserve_gateway_mirror_agreement_total`), each business API its pipeline's mirrored model calls
(`meshserve_pipeline_mirror_agreement_total`, services/pipeline/shadow.py), so business-route traffic
alone is judged too. Istio's Envoy mirrors fire-and-forget, so on a cluster there is no agreement data
and `--agreement skip` judges on errors and latency alone (the report says so).

Like Flagger and Argo Rollouts it shifts and judges; unlike them it compares predictions.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mesh import canary
from mesh.compile import promql as queries
from mesh.spec import format_duration, parse_duration, parse_version, read_yaml
from observability.prometheus import DEFAULT_SCRAPE_INTERVAL, SCRAPE_INTERVAL_ENV
from services.common.settings import SPEC_ENV

PROMETHEUS_URL_ENV = "MESHSERVE_PROMETHEUS_URL"
HOLD_REPORT_S = 10.0  # a line at least this often while a step holds
MAX_SCRAPE_INTERVAL_S = 300.0
AGREEMENT_MODES = ("required", "skip")
NO_AGREEMENT_HINT = (
    "the versions served requests but none of their answers were compared: on the local stack the embedded "
    "gateway compares mirrored /v2 infer calls and each business API its pipeline's mirrored model calls "
    "(MESHSERVE_TRAFFIC=client), so check both are up and scraped (`meshserve status`, Prometheus targets); "
    "a cluster's Istio mirrors without comparing, so pass --agreement skip there"
)
NO_TRAFFIC_HINT = (
    "no requests reached the model's versions in the window, so there was nothing to compare: keep traffic "
    "flowing on a route that calls the model (its pipeline's route or /v2/models/<model>/infer) while it advances"
)


class ApplyError(RuntimeError):
    """The --apply command failed: the cluster may not run what the spec says."""


class PrometheusError(RuntimeError):
    """A query could not be answered (unreachable, HTTP or PromQL error)."""


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
    hint: str = ""


@dataclass(frozen=True)
class Timing:
    """How long each step waits and what it judges (see the module docstring)."""

    hold_s: float
    scrape_interval_s: float
    settle_s: float
    window_s: int

    @property
    def window(self) -> str:
        return f"{self.window_s}s"


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
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL
    settle: str = ""
    window: str = ""
    agreement: str = "required"  # required | skipped
    apply: str | None = None
    steps: list[Step] = field(default_factory=list)
    outcome: str = "running"  # promoted | rolled back | rollback not applied
    failure: str | None = None  # why it stopped early (--apply or Prometheus), when it did


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


def timing(hold_s: float, scrape_interval_s: float) -> Timing:
    """Settle >= 2 scrape intervals (>= 1 s), window >= 4 scrape intervals and >= the hold (whole s, >= 2)."""
    if not 0 < scrape_interval_s <= MAX_SCRAPE_INTERVAL_S:
        raise ValueError(
            f"--scrape-interval {format_duration(scrape_interval_s)}: "
            f"write the Prometheus scrape interval, above 0 and at most {format_duration(MAX_SCRAPE_INTERVAL_S)}"
        )
    settle = max(1.0, 2 * scrape_interval_s)
    window = max(2, math.ceil(hold_s), math.ceil(4 * scrape_interval_s))
    return Timing(hold_s, scrape_interval_s, settle, window)


def promql(model: str, stable: int, canary_version: int, window: str) -> dict[str, str]:
    """The figures' queries (mesh/compile/promql.py's building blocks)."""
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


def judge(figures: Figures, limits: Thresholds, agreement: bool = True) -> list[Check]:
    """Canary against stable. A NaN (no data) never passes: an unjudged step is not a healthy one.

    Without `agreement` the two mirror checks are left out (a cluster's mesh does not compare answers).
    """

    def ok(value: float, test: Callable[[float], bool]) -> bool:
        return not math.isnan(value) and test(value)

    f = figures
    error_bound = (0 if math.isnan(f.stable_error_ratio) else f.stable_error_ratio) + limits.max_error_increase
    latency_bound = max(f.stable_p95_s * limits.max_latency_ratio, f.stable_p95_s + limits.latency_slack_s)
    if math.isnan(latency_bound):
        latency_text = "no stable data"
    else:
        latency_text = f"<= {latency_bound * 1000:.2f}ms (stable {f.stable_p95_s * 1000:.2f}ms)"
    checks = [
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
    ]
    if not agreement:
        return checks
    no_data = math.isnan(f.compared)  # no series at all: nothing compared answers (0 is a quiet window)
    served = any(v > 0 for v in (f.stable_requests, f.canary_requests) if not math.isnan(v))
    hint = (NO_AGREEMENT_HINT if served else NO_TRAFFIC_HINT) if no_data else ""
    return [
        *checks,
        Check(
            "mirrored comparisons",
            f">= {limits.min_compared}",
            f"{f.compared:.0f}",
            ok(f.compared, lambda v: v >= limits.min_compared),
            hint,
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
        f"Outcome: **{report.outcome}**. Steps {report.steps_planned}, hold {report.hold} each: "
        f"a settle of {report.settle}, then a {report.window} window (scrape interval {report.scrape_interval}).",
        "",
    ]
    if report.failure:
        lines += [f"Stopped early: {report.failure}", ""]
    if report.apply:
        lines += [f"Applied after every edit with `{report.apply}`.", ""]
    if report.agreement == "skipped":
        lines += ["Top-1 agreement: **skipped** (`--agreement skip`): judged on errors and latency alone.", ""]
    lines += [
        "| step | mirror to | check | bound | observed | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for step in report.steps:
        for check in step.checks:
            verdict = "pass" if check.passed else "**FAIL**"
            lines.append(
                f"| {step.weight}% | v{step.mirror_to} | {check.name} | {check.bound} | {check.observed} | {verdict} |"
            )
    hints = sorted({c.hint for step in report.steps for c in step.checks if c.hint and not c.passed})
    lines += [""] + [f"Note: {hint}." for hint in hints]
    lines += ["", "Thresholds: " + ", ".join(f"{k}={v}" for k, v in asdict(report.thresholds).items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the edges


def query_scalar(prometheus: str, expr: str, timeout: float = 10.0) -> float:
    """One instant query -> a float (NaN for an empty vector); PrometheusError when it cannot be answered."""
    import httpx

    try:
        reply = httpx.get(f"{prometheus.rstrip('/')}/api/v1/query", params={"query": expr}, timeout=timeout)
        body = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusError(f"Prometheus at {prometheus} did not answer {expr!r}: {exc}") from None
    if reply.status_code != 200 or body.get("status") != "success":
        raise PrometheusError(f"Prometheus rejected {expr!r}: {body.get('error', reply.text)}")
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else math.nan


def measure(prometheus: str, model: str, stable: int, canary_version: int, window: str) -> Figures:
    values = {k: query_scalar(prometheus, q) for k, q in promql(model, stable, canary_version, window).items()}
    return Figures(**values)


def run_apply(command: str, spec_path: Path, log: Callable[[str], None], timeout_s: float) -> None:
    """Run `--apply` through the shell (MESHSERVE_SPEC = the spec), its output to `log` line by line.

    Its own process group, so a timeout or Ctrl-C stops what it started too; non-zero exit -> ApplyError.
    """
    log(f"  $ {command}")
    child = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        env={**os.environ, SPEC_ENV: str(spec_path.resolve())},
    )

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            log(f"  | {line.rstrip()}")
        code = child.wait()
    except BaseException:
        kill()
        child.wait()
        raise
    finally:
        timer.cancel()
    if code != 0:
        why = f"was stopped after {format_duration(timeout_s)}" if code == -signal.SIGKILL else f"exited {code}"
        raise ApplyError(f"--apply {command!r} {why}")


def hold(settle_s: float, window_s: float, sleep: Callable[[float], None], log: Callable[[str], None]) -> None:
    """Wait out the settle and the window, saying where the wait is every HOLD_REPORT_S (never silent)."""
    total, waited = settle_s + window_s, 0.0
    while waited < total:
        chunk = min(HOLD_REPORT_S, total - waited)
        sleep(chunk)
        waited += chunk
        if waited < total:
            phase = "settling" if waited < settle_s else "collecting the window"
            log(f"  ... {phase}: {waited:.0f}s of {total:.0f}s, judging in {total - waited:.0f}s")


def advance(
    spec_path: Path,
    model: str,
    canary_version: int,
    steps: list[int],
    *,
    hold_s: float,
    scrape_interval_s: float,
    prometheus: str,
    limits: Thresholds = Thresholds(),
    agreement: str = "required",
    apply: str | None = None,
    apply_timeout_s: float = 600.0,
    measure: Callable[[str, str, int, int, str], Figures] = measure,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> Report:
    """Run the analysis, leaving the spec (and, with `apply`, the cluster) promoted or rolled back."""
    if agreement not in AGREEMENT_MODES:
        raise ValueError(f"--agreement {agreement!r}: one of {', '.join(AGREEMENT_MODES)}")
    plan = timing(hold_s, scrape_interval_s)
    doc = read_yaml(spec_path)
    stable = canary.stable_version(doc, model)
    if stable == canary_version:
        raise canary.CanaryError(f"v{canary_version} is already the stable version of {model}: nothing to advance")
    canary.current_weights(doc, model)  # validates the model name
    original_mirror = current_mirror(doc, model)
    report = Report(
        model,
        stable,
        canary_version,
        steps,
        format_duration(hold_s),
        limits,
        scrape_interval=format_duration(scrape_interval_s),
        settle=format_duration(plan.settle_s),
        window=plan.window,
        agreement="required" if agreement == "required" else "skipped",
        apply=apply,
    )

    def shift(edit: Callable[[Any], Any]) -> None:
        canary.apply_to_file(spec_path, edit)
        if apply:
            run_apply(apply, spec_path, log, apply_timeout_s)

    promoted = False
    try:
        for weight in steps:
            mirror_to = stable if weight == 100 else canary_version
            log(f"step {weight}%: v{canary_version} at {weight}%, mirrored to v{mirror_to}")
            shift(step_edit(model, stable, canary_version, weight))
            log(f"  settle {report.settle}, then judge over {plan.window}")
            hold(plan.settle_s, plan.window_s, sleep, log)
            figures = measure(prometheus, model, stable, canary_version, plan.window)
            step = Step(weight, mirror_to, plan.window, figures, judge(figures, limits, agreement == "required"))
            report.steps.append(step)
            for check in step.checks:
                log(f"  {'pass' if check.passed else 'FAIL'}  {check.name}: {check.observed} (bound {check.bound})")
                if check.hint and not check.passed:
                    log(f"        {check.hint}")
            if not step.passed:
                break
        else:
            shift(final_edit(model, canary_version, original_mirror))
            promoted = True
    except (ApplyError, PrometheusError) as exc:
        report.failure = str(exc)
        log(f"stopped: {exc}")
    finally:
        if promoted:
            report.outcome = "promoted"
        else:
            try:
                shift(final_edit(model, stable, original_mirror))
                report.outcome = "rolled back"
            except ApplyError as exc:
                report.outcome = "rollback not applied"
                report.failure = "; ".join(filter(None, [report.failure, f"the rollback's {exc}"]))
        winner = canary_version if promoted else stable
        if report.outcome == "rollback not applied":
            log(f"ROLLBACK NOT APPLIED: the spec gives {model} v{winner} all the traffic, but {report.failure}")
        else:
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
    from services.common.settings import resolve_run_dir

    url_file = resolve_run_dir().path / URL_FILE  # the project's newest `meshserve up` run (or $MESHSERVE_RUN_DIR)
    return url_file.read_text().strip() if url_file.exists() else None


def default_scrape_interval() -> str:
    """The local stack's: MESHSERVE_SCRAPE_INTERVAL, else observability/prometheus.py's 5s."""
    return os.environ.get(SCRAPE_INTERVAL_ENV) or DEFAULT_SCRAPE_INTERVAL


def _run(args: argparse.Namespace) -> int:
    from mesh.spec import SpecError
    from services.common import settings

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
        report = advance(
            settings.resolve_spec(args.spec).path,
            args.model,
            version,
            steps,
            hold_s=parse_duration(args.hold),
            scrape_interval_s=parse_duration(args.scrape_interval or default_scrape_interval()),
            prometheus=prometheus,
            limits=thresholds_from(args),
            agreement=args.agreement,
            apply=args.apply,
            apply_timeout_s=parse_duration(args.apply_timeout),
        )
    except (canary.CanaryError, SpecError, ValueError) as exc:  # settings.SettingsError is a ValueError
        print(f"meshserve canary advance: {exc}", file=sys.stderr)
        return 2
    name = f"canary-{args.model}-v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = args.report or settings.runs_root() / name
    json_path, md_path = write_report(report, Path(out))
    print(f"report: {json_path} and {md_path}")
    if report.failure:
        print(f"meshserve canary advance: {report.outcome}: {report.failure}", file=sys.stderr)
    return {"promoted": 0, "rolled back": 1}.get(report.outcome, 3)


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    """The thresholds `add_analysis_options` parsed."""
    from mesh.spec import parse_duration

    return Thresholds(
        max_error_increase=args.max_error_increase,
        max_latency_ratio=args.max_latency_ratio,
        latency_slack_s=parse_duration(args.latency_slack),
        min_agreement=args.min_agreement,
        min_requests=args.min_requests,
        min_compared=args.min_compared,
    )


def add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """The steps, Prometheus and thresholds of an analysis: `canary advance` and `model release` share them."""
    limits = Thresholds()
    parser.add_argument("--steps", default="5,25,50,100", help="canary weights in order (default 5,25,50,100)")
    parser.add_argument(
        "--hold", default="30s", help="time judged at each step (at least 4 scrape intervals are; default 30s)"
    )
    parser.add_argument(
        "--prometheus", default=None, help=f"Prometheus URL (default: ${PROMETHEUS_URL_ENV} or the local stack's)"
    )
    parser.add_argument(
        "--scrape-interval",
        default=None,
        help="Prometheus's scrape interval, which sets the settle (2x) and the minimum window (4x); default "
        "$MESHSERVE_SCRAPE_INTERVAL or the local stack's 5s; a cluster's ServiceMonitors scrape every 15s",
    )
    parser.add_argument(
        "--apply",
        default=None,
        metavar="CMD",
        help="shell command run after every spec edit (a cluster: e.g. 'pulumi up --yes --skip-preview'); "
        "its failure stops the analysis and rolls back (CMD runs again for the rollback). Not needed locally: "
        "the gateway watches mesh.yaml",
    )
    parser.add_argument("--apply-timeout", default="10m", help="stop CMD after this long (a failure; default 10m)")
    parser.add_argument(
        "--agreement",
        choices=AGREEMENT_MODES,
        default="required",
        help="top-1 agreement on mirrored inputs: required (the local stack's gateway and business APIs "
        "compare them) or skip (a cluster's Istio mirrors without comparing)",
    )
    parser.add_argument(
        "--max-error-increase",
        type=float,
        default=limits.max_error_increase,
        help="the canary's error ratio may exceed the stable's by this much",
    )
    parser.add_argument(
        "--max-latency-ratio", type=float, default=limits.max_latency_ratio, help="canary p95 <= stable p95 x this"
    )
    parser.add_argument(
        "--latency-slack",
        default=format_duration(limits.latency_slack_s),
        help="the canary's p95 may also exceed the stable's by this much (whichever bound is larger)",
    )
    parser.add_argument(
        "--min-agreement", type=float, default=limits.min_agreement, help="top-1 agreement on mirrored inputs"
    )
    parser.add_argument(
        "--min-requests", type=int, default=limits.min_requests, help="canary requests a window needs to be judged"
    )
    parser.add_argument(
        "--min-compared", type=int, default=limits.min_compared, help="mirrored comparisons a window needs"
    )


def register_canary(ops: argparse._SubParsersAction) -> None:
    parser = ops.add_parser(
        "advance",
        help="shift traffic to a canary step by step, judge it in Prometheus, promote or roll back",
        description=__doc__.splitlines()[0],
        epilog="exit status: 0 promoted, 1 rolled back, 2 refused (bad arguments), 3 rolled back in the spec "
        "but --apply failed to apply the rollback",
    )
    parser.add_argument("model", help="a model of the spec, e.g. digits")
    parser.add_argument("version", help="the canary version, e.g. v2")
    add_analysis_options(parser)
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="report folder (default: the project's runs/canary-<model>-v<N>-<time>)",
    )
    parser.set_defaults(func=_run)


def register(subparsers: argparse._SubParsersAction) -> None:
    """`meshserve canary`: mesh/canary.py's set | promote | rollback, plus `advance`."""
    canary.register(subparsers, extensions=(register_canary,))
