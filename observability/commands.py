"""`meshserve rules`: the alert rules generated from the spec, as a rules file for promtool or Prometheus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_rules(args: argparse.Namespace) -> int:
    from mesh.compile.alerts import render_rules, write_rules
    from mesh.spec import SpecError, load_spec
    from services.common.settings import SettingsError, resolve_spec

    try:
        spec = load_spec(resolve_spec(args.spec).path, check_repository=False)
    except (SpecError, SettingsError) as exc:
        print(f"meshserve rules: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(render_rules(spec))
    else:
        print(f"wrote {write_rules(spec, args.out)}  (check: promtool check rules {args.out})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rules", help="write the Prometheus alert rules generated from the spec's SLOs and model versions"
    )
    from services.common.settings import SPEC_HELP

    parser.add_argument("--spec", default=None, help=SPEC_HELP)
    parser.add_argument("--out", type=Path, default=None, help="rules file to write (default: stdout)")
    parser.set_defaults(func=run_rules)
