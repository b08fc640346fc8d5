"""`meshserve model publish | optimize | release | list | show`: the lifecycle from a new ONNX file to a
promoted version. Registration imports nothing heavy; each command imports what it drives."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_REFUSED = 1  # a gate failed / the canary rolled back
EXIT_USAGE = 2


def _spec_path(args: argparse.Namespace) -> Path:
    """The spec every command finds the same way (services.common.settings): --spec, $MESHSERVE_SPEC, the project."""
    from services.common.settings import resolve_spec

    return resolve_spec(args.spec).path


def _repository(args: argparse.Namespace) -> str:
    """--repository, else the spec's `repository` (relative to the spec file)."""
    if args.repository:
        return args.repository
    from mesh.spec import read_yaml

    spec = _spec_path(args)
    return str((spec.parent / read_yaml(spec)["repository"]).resolve())


def _spec_model(args: argparse.Namespace, model: str) -> dict[str, Any] | None:
    from mesh.spec import read_yaml

    spec = _spec_path(args)
    if not spec.exists():
        return None
    return (read_yaml(spec).get("models") or {}).get(model)


def _stable(args: argparse.Namespace, model: str) -> int | None:
    """--stable, else the spec's stable version of the model (None: the newest in the repository)."""
    if getattr(args, "stable", None) is not None:
        return args.stable
    from mesh import canary
    from mesh.spec import read_yaml

    if _spec_model(args, model) is None:
        return None
    return canary.stable_version(read_yaml(_spec_path(args)), model)


def _fail(command: str, message: str, code: int = EXIT_USAGE) -> int:
    print(f"meshserve model {command}: {message}", file=sys.stderr)
    return code


def _log(as_json: bool) -> Callable[[str], None]:
    """Progress to stdout, or to stderr when stdout carries the JSON for a script."""
    return (lambda message: print(message, file=sys.stderr)) if as_json else print


def _print_outcome(outcome: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.metadata, indent=2, default=str))


def _publish(args: argparse.Namespace) -> int:
    from lifecycle.publish import PublishRefused, publish
    from lifecycle.store import open_store

    log = _log(args.json)
    try:
        store = open_store(_repository(args))
        candidate = Path(args.file).read_bytes()
        outcome = publish(
            store,
            args.name,
            candidate,
            stable=_stable(args, args.name),
            parent=args.source_version,
            produced_by={"how": "publish", "source_file": Path(args.file).name},
            note=args.note or "",
            force=args.force,
            log=log,
        )
    except PublishRefused as exc:
        return _fail("publish", str(exc), EXIT_REFUSED)
    except (OSError, ValueError) as exc:
        return _fail("publish", str(exc))
    _print_outcome(outcome, args.json)
    if args.release:
        args.version = str(outcome.version)
        return _release(args)
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from lifecycle import optimize
    from lifecycle.publish import PublishRefused, load_model, publish
    from lifecycle.store import MODEL_FILE, open_store

    if not args.int8:
        return _fail("optimize", "name the optimization: --int8 (the one there is)")
    log = _log(args.json)
    try:
        store = open_store(_repository(args))
        model = load_model(store, args.name)
        if args.source not in store.versions(args.name):
            return _fail("optimize", f"{args.name} has no version {args.source} in {store.uri}")
        source = store.read(f"{args.name}/{args.source}/{MODEL_FILE}")
        plan = optimize.choose(source, model.contract)
        log(f"INT8, {plan.why}")
        int8 = optimize.quantize(source, plan, model.data, model.contract.calibration_count)
        log(f"quantized: {len(source)} -> {len(int8)} bytes")
        outcome = publish(
            store,
            args.name,
            int8,
            stable=_stable(args, args.name),
            parent=args.source,
            produced_by={
                "how": f"optimize: int8 {plan.method}",
                "why": plan.why,
                "source_version": args.source,
                "source_size_bytes": len(source),
                "calibration_rows": min(model.contract.calibration_count, model.data.count)
                if plan.method == "static"
                else 0,
            },
            note=args.note or "",
            force=args.force,
            log=log,
        )
    except PublishRefused as exc:
        return _fail("optimize", str(exc), EXIT_REFUSED)
    except (OSError, ValueError) as exc:
        return _fail("optimize", str(exc))
    _print_outcome(outcome, args.json)
    return 0


def _release(args: argparse.Namespace) -> int:
    from lifecycle.release import NotDeployed, release, write_report
    from lifecycle.store import open_store
    from mesh import canary, canary_analysis
    from mesh.spec import SpecError, parse_duration, parse_version

    prometheus = args.prometheus or canary_analysis.default_prometheus()
    if not prometheus:
        return _fail(
            "release",
            f"no Prometheus: pass --prometheus URL, set {canary_analysis.PROMETHEUS_URL_ENV}, or start the local stack",
        )
    try:
        version = parse_version(args.version)
        report = release(
            open_store(_repository(args)),
            _spec_path(args),
            args.name,
            version,
            steps=canary_analysis.parse_steps(args.steps),
            hold_s=parse_duration(args.hold),
            scrape_interval_s=parse_duration(args.scrape_interval or canary_analysis.default_scrape_interval()),
            prometheus=prometheus,
            limits=canary_analysis.thresholds_from(args),
            agreement=args.agreement,
            apply=args.apply,
            apply_timeout_s=parse_duration(args.apply_timeout),
        )
    except NotDeployed as exc:
        return _fail("release", str(exc))
    except (canary.CanaryError, SpecError, ValueError, canary_analysis.ApplyError) as exc:
        return _fail("release", str(exc))
    from services.common.settings import runs_root

    out = args.report or runs_root() / f"release-{args.name}-v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
    json_path, md_path = write_report(report, Path(out))
    print(f"release report: {json_path} and {md_path}")
    return {"promoted": 0, "rolled back": EXIT_REFUSED}.get(report.decision, 3)


def _list(args: argparse.Namespace) -> int:
    from lifecycle import registry
    from lifecycle.store import open_store
    from mesh.spec import read_yaml

    try:
        store = open_store(_repository(args))
        names = (
            [args.name] if args.op == "show" else args.names or sorted(read_yaml(_spec_path(args)).get("models") or {})
        )
        tables = {name: registry.rows(store, name, _spec_model(args, name)) for name in names}
    except (OSError, ValueError) as exc:
        return _fail(args.op, str(exc))
    if args.op == "show":
        name = names[0]
        if not store.versions(name) and not tables[name]:
            return _fail("show", f"no model {name!r} in {store.uri}")
        if args.json:
            versions = [row | {"metadata": registry.read_metadata(store, name, row["version"])} for row in tables[name]]
            print(json.dumps({"model": name, "repository": store.uri, "versions": versions}, indent=2, default=str))
        else:
            print(registry.render_table(name, tables[name]))
            for row in tables[name]:
                meta = registry.read_metadata(store, name, row["version"])
                perf = (meta.get("performance") or {}).get("candidate") or {}
                if perf:
                    print(
                        f"  v{row['version']}: {perf.get('latency_b1_ms')} ms at batch 1, "
                        f"{perf.get('throughput_rows_per_s')} rows/s at batch {perf.get('best_batch')}, "
                        f"sha256 {meta.get('sha256', '')[:12]}..., "
                        f"published {row['published_at']} by {row['published_by']}"
                    )
        return 0
    if args.json:
        print(json.dumps({"repository": store.uri, "models": tables}, indent=2, default=str))
    else:
        print("\n\n".join(registry.render_table(name, table) for name, table in tables.items()))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    from services.common.settings import SPEC_HELP

    parser.add_argument("--spec", default=None, help=SPEC_HELP)
    parser.add_argument(
        "--repository",
        default=os.environ.get("MESHSERVE_REPOSITORY"),
        help="model repository: a folder or s3://bucket/prefix (default: the spec's `repository`)",
    )


def _canary_options(parser: argparse.ArgumentParser) -> None:
    from mesh.canary_analysis import add_analysis_options

    add_analysis_options(parser)  # the same steps, Prometheus and thresholds as `canary advance`
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="report folder (default: the project's runs/release-<model>-v<N>-<time>)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="publish, optimize, release and list model versions")
    ops = model.add_subparsers(dest="op", required=True, metavar="OP")

    publish = ops.add_parser(
        "publish",
        help="evaluate an ONNX file against the model's gates and write it as the next version",
        epilog="exit status: 0 published, 1 refused by a gate (nothing written), 2 bad arguments",
    )
    publish.add_argument("name", help="a model of the spec, e.g. digits")
    publish.add_argument("file", help="the candidate model.onnx")
    publish.add_argument("--source-version", type=int, default=None, help="the version it was derived from (lineage)")
    publish.add_argument("--note", default="", help="recorded in metadata.yaml")
    publish.add_argument("--stable", type=int, default=None, help="compare with it (default: the stable)")
    publish.add_argument("--force", action="store_true", help="write it even if a gate fails (recorded as overridden)")
    publish.add_argument("--json", action="store_true", help="print the written metadata as JSON")
    publish.add_argument("--release", action="store_true", help="then release it by canary (the release options apply)")
    _common(publish)
    _canary_options(publish)
    publish.set_defaults(func=_publish)

    optimize = ops.add_parser(
        "optimize",
        help="INT8-quantize a version and publish it through the same gates",
        epilog="exit status: 0 published, 1 refused by a gate (nothing written), 2 bad arguments",
    )
    optimize.add_argument("name", help="a model of the spec, e.g. digits")
    optimize.add_argument("--from", dest="source", type=int, required=True, metavar="N", help="the FP32 version")
    optimize.add_argument("--int8", action="store_true", help="quantize to INT8 (static QDQ or dynamic, explained)")
    optimize.add_argument("--note", default="", help="recorded in metadata.yaml")
    optimize.add_argument("--stable", type=int, default=None, help="compare with it (default: the stable)")
    optimize.add_argument("--force", action="store_true", help="write it even if a gate fails (recorded as overridden)")
    optimize.add_argument("--json", action="store_true", help="print the written metadata as JSON")
    _common(optimize)
    optimize.set_defaults(func=_optimize)

    release = ops.add_parser(
        "release",
        help="release a published version by automated canary: promoted or rolled back, one report",
        epilog="exit status: 0 promoted, 1 rolled back, 2 refused (or: added to the spec, restart the local stack), "
        "3 rolled back in the spec but --apply failed",
    )
    release.add_argument("name", help="a model of the spec, e.g. digits")
    release.add_argument("version", help="the published version to release, e.g. 3")
    _common(release)
    _canary_options(release)
    release.set_defaults(func=_release)

    for op, what in (
        ("list", "every version of the models with state and evaluation"),
        ("show", "one model in detail"),
    ):
        parser = ops.add_parser(op, help=what)
        if op == "list":
            parser.add_argument("names", nargs="*", metavar="NAME", help="default: every model in the spec")
        else:
            parser.add_argument("name", help="a model of the repository")
            parser.set_defaults(names=None)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        _common(parser)
        parser.set_defaults(func=_list)
