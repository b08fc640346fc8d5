"""The one locustfile. Environment (see locust.conf and `python -m loadtests run --help`):

LOADTEST_SUITE   classify | infer-json | infer-binary          (which User runs)
LOADTEST_SHAPE   step | spike | soak | none                    (-u/-r/--run-time size every shape)
LOADTEST_RPS_PER_USER  each user's request rate cap (0: as fast as answered); sets the offered load
LOADTEST_SPEC    mesh.yaml whose SLO for the suite's route gates the run (default: the project's, as every command
                 finds it: $MESHSERVE_SPEC, else mesh/mesh.yaml from the working directory up)
LOADTEST_SLO_*   overrides of that SLO (see loadtests/gate.py)
LOADTEST_CANARY_CHECK  0 to skip comparing the x-model-version split with the spec's weights
LOADTEST_VERDICT_FILE  also write the verdicts as JSON there
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from locust import events

from loadtests import payloads
from loadtests.canary_split import split_verdicts
from loadtests.gate import RunFigures, apply_overrides, evaluate, table
from loadtests.shapes import SHAPES
from loadtests.users import USERS, VERSIONS
from mesh.spec import load_spec
from services.common.settings import resolve_spec

SUITE = os.environ.get("LOADTEST_SUITE", "classify")
if SUITE not in USERS:
    raise SystemExit(f"LOADTEST_SUITE={SUITE!r}: choose one of {sorted(USERS)}")
# Locust runs every User class bound in this module: bind exactly one, under its own name.
globals()[USERS[SUITE].__name__] = USERS[SUITE]
ROUTE = USERS[SUITE].route
# The digits now, before the run's clock starts: importing scikit-learn in the first user's on_start
# blocked every greenlet for seconds (a 6 s run sent one request and the gate measured the generator).
payloads.digit_images()

SHAPE = os.environ.get("LOADTEST_SHAPE", "none")
if SHAPE != "none":
    if SHAPE not in SHAPES:
        raise SystemExit(f"LOADTEST_SHAPE={SHAPE!r}: choose one of {sorted(SHAPES)} or none")
    globals()[SHAPES[SHAPE].__name__] = SHAPES[SHAPE]


def _route_model(spec, route: str) -> str | None:
    for pipeline in spec.pipelines.values():
        if pipeline.route == route:
            return pipeline.model_stage().model
    parts = route.strip("/").split("/")
    return parts[2] if len(parts) == 4 and parts[:2] == ["v2", "models"] else None


def offered_rps(environment) -> float | None:
    """A paced run's offered load: the mean user count over the run x each user's rate; None unpaced."""
    rate = float(os.environ.get("LOADTEST_RPS_PER_USER", 0))
    if rate <= 0:
        return None
    users = [entry["user_count"][1] for entry in environment.stats.history]
    if not users:
        users = [getattr(environment.parsed_options, "num_users", 0) or 0]
    return rate * sum(users) / len(users)


@events.quitting.add_listener
def slo_gate(environment, **_kwargs) -> None:
    spec = load_spec(os.environ.get("LOADTEST_SPEC") or resolve_spec().path, check_repository=False)
    route = ROUTE
    total = environment.stats.total
    figures = RunFigures(
        requests=total.num_requests,
        failures=total.num_failures,
        p95_s=total.get_response_time_percentile(0.95) / 1000,
        p99_s=total.get_response_time_percentile(0.99) / 1000,
        rps=total.total_rps,
        offered_rps=offered_rps(environment),
    )
    slo = spec.slo_for(route)
    verdicts = evaluate(apply_overrides(slo) if slo else None, figures)
    model = _route_model(spec, route)
    if os.environ.get("LOADTEST_CANARY_CHECK", "1") != "0" and model in spec.models:
        verdicts += split_verdicts(dict(VERSIONS), spec.models[model].weights())
    print(table(f"\nSLO gate: {SUITE} {route} ({'spec' if slo else 'no SLO in the spec'})", verdicts), flush=True)
    failed = [v.check for v in verdicts if not v.passed]
    if failed:
        environment.process_exit_code = 1
        print(f"SLO gate: FAIL ({', '.join(failed)})", flush=True)
    else:
        print("SLO gate: PASS", flush=True)
    if os.environ.get("LOADTEST_VERDICT_FILE"):
        with open(os.environ["LOADTEST_VERDICT_FILE"], "w") as handle:
            json.dump(
                {
                    "suite": SUITE,
                    "route": route,
                    "versions": dict(VERSIONS),
                    "figures": asdict(figures),
                    "verdicts": [asdict(v) for v in verdicts],
                    "passed": not failed,
                },
                handle,
                indent=2,
            )
