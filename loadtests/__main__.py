"""`python -m loadtests run --suite classify --host http://127.0.0.1:8080 --shape step --duration 30s`

Runs Locust headless against the local stack or any host (a cluster's gateway), gated on the
route's SLO from the spec (found like every command's: --spec, $MESHSERVE_SPEC, the project); writes
CSV, HTML (with the SLO verdicts), the verdicts (JSON) and a latency-over-time PNG into --out. The
exit code is Locust's: non-zero when the SLO gate (or the canary split check) fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from loadtests.profiles import PROFILES
from loadtests.report import add_verdicts_to_html, plot_latency
from loadtests.suites import SUITES, route
from mesh.spec import format_duration, load_spec, parse_duration
from services.cliparser import Parser
from services.common import settings

HERE = Path(__file__).resolve().parent
MISSING_EXTRA = "the load tests need Locust and matplotlib: pip install 'meshserve[load]'"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m loadtests", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one suite headless and gate it on the spec's SLO")
    run.add_argument("--suite", choices=SUITES, default="classify", help="what to load")
    run.add_argument(
        "--host", default=os.environ.get("LOADTEST_HOST", "http://127.0.0.1:8080"), help="the gateway's base URL"
    )
    run.add_argument("--shape", choices=[*PROFILES, "none"], default="none", help="how users vary over the run")
    run.add_argument("--duration", default="30s", help="run length (a duration: 30s, 2m)")
    run.add_argument("--users", type=int, default=10, help="users (the peak for step/spike)")
    run.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default: --users)")
    run.add_argument("--rps-per-user", type=float, default=0, help="cap each user's request rate (0 = no cap)")
    run.add_argument("--spec", type=Path, default=None, help=settings.SPEC_HELP)
    run.add_argument(
        "--out", type=Path, default=None, help="report folder (default: the project's runs/loadtest-<time>)"
    )
    run.add_argument("--no-canary-check", action="store_true", help="skip the x-model-version split check")
    run.set_defaults(func=run_command)
    return parser


def locust_conf() -> Path:
    """The project's loadtests/locust.conf (what `meshserve init` wrote), else the packaged one."""
    own = settings.project_root() / "loadtests" / "locust.conf"
    return own if own.is_file() else HERE / "locust.conf"


def locust_command(args: argparse.Namespace, out: Path) -> list[str]:
    """Every option passed is one the run uses: the shapes read --users, --spawn-rate and --run-time."""
    seconds = parse_duration(args.duration)
    command = [
        sys.executable, "-m", "locust",
        "--config", str(locust_conf()),
        "--locustfile", str(HERE / "locustfile.py"),
        "--host", args.host,
        "--headless",
        "--csv", str(out / "locust"),
        "--html", str(out / "report.html"),
        "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate or max(1, args.users)),
        "--run-time", f"{max(1, round(seconds))}s",
    ]  # fmt: skip
    return command


def locust_env(args: argparse.Namespace, out: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LOADTEST_SUITE=args.suite,
        LOADTEST_SHAPE=args.shape,
        LOADTEST_SPEC=str(args.spec),
        LOADTEST_VERDICT_FILE=str(out / "verdicts.json"),
        LOADTEST_RPS_PER_USER=str(args.rps_per_user),
    )
    if args.no_canary_check:
        env["LOADTEST_CANARY_CHECK"] = "0"
    root = str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_command(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("locust") is None or importlib.util.find_spec("matplotlib") is None:
        print(f"python -m loadtests: {MISSING_EXTRA}", file=sys.stderr)
        return 2
    try:
        args.spec = settings.resolve_spec(args.spec).path
    except settings.SettingsError as exc:
        print(f"python -m loadtests: {exc}", file=sys.stderr)
        return 2
    out = (args.out or settings.runs_root() / f"loadtest-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    code = subprocess.call(locust_command(args, out), env=locust_env(args, out))
    history = out / "locust_stats_history.csv"
    if history.exists():
        slo = load_spec(args.spec, check_repository=False).slo_for(route(args.suite))
        bounds = {"p95": slo.p95_latency * 1000, "p99": slo.p99_latency * 1000} if slo else None
        title = f"{args.suite} {route(args.suite)} ({args.shape}, {format_duration(parse_duration(args.duration))})"
        plot_latency(history, out / "latency.png", title=title, slo_ms=bounds)
    verdicts = out / "verdicts.json"
    passed = json.loads(verdicts.read_text())["passed"] if verdicts.exists() else None
    if verdicts.exists() and (out / "report.html").exists():
        add_verdicts_to_html(out / "report.html", json.loads(verdicts.read_text()))
    print(f"reports in {out} (gate {'passed' if passed else 'failed' if passed is False else 'did not run'})")
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
