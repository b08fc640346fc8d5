"""`meshserve serve`: the model server subcommand. Imports nothing heavy until it runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MISSING_EXTRA = (
    "meshserve serve needs onnxruntime, which comes with an extra: pip install 'meshserve[cpu]' "
    "(or 'meshserve[gpu]' for onnxruntime-gpu; never both)"
)


def parse_model(value: str) -> tuple[str, int | None]:
    """NAME or NAME:VERSION (a positive integer)."""
    name, _, version = value.partition(":")
    if not name or (version and not (version.isdigit() and int(version) > 0)):
        raise argparse.ArgumentTypeError(f"expected NAME or NAME:VERSION, got {value!r}")
    return name, int(version) if version else None


def parse_override(value: str) -> tuple[str, dict]:
    """NAME=JSON: a partial config.yaml (a JSON object) for model NAME."""
    name, sep, text = value.partition("=")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {value!r}")
    try:
        patch = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--config-override {name}: not valid JSON ({exc})") from None
    if not isinstance(patch, dict):
        raise argparse.ArgumentTypeError(f"--config-override {name}: expected a JSON object")
    return name, patch


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model repository over the Open Inference Protocol (v2)",
        description="Serve models/<name>/config.yaml + models/<name>/<version>/model.onnx over HTTP (KServe v2).",
    )
    parser.add_argument("--repository", type=Path, required=True, help="model repository folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument(
        "--model",
        action="append",
        type=parse_model,
        default=[],
        metavar="NAME[:VERSION]",
        help="serve only this model (repeatable); a version pins it, overriding the version policy",
    )
    parser.add_argument(
        "--config-override",
        action="append",
        type=parse_override,
        default=[],
        metavar="NAME=JSON",
        help='a partial config.yaml laid over NAME\'s (repeatable), e.g. digits=\'{"instance_group": {"count": 2}}\'',
    )
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, metavar="SECONDS", help="repository poll period; 0 = off"
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=64 * 1024 * 1024, metavar="N", help="larger request bodies get 413"
    )
    parser.add_argument(
        "--require-device",
        choices=["gpu"],
        default=None,
        help="fail the load of a version that runs on anything else (readiness stays false): the Kubernetes "
        "workload of a `device: gpu` version sets it, so a GPU pod never silently computes on the CPU",
    )
    parser.add_argument(
        "--grpc-port", type=int, default=0, metavar="PORT", help="v2 gRPC listener (inference + health); 0 = off"
    )
    parser.add_argument(
        "--grpc-max-message-bytes",
        type=int,
        default=0,
        metavar="N",
        help="largest gRPC message in or out; never below --max-body-bytes (the default)",
    )
    parser.add_argument(
        "--drain-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after SIGTERM, keep answering 503 at least this long so load balancers see not-ready",
    )
    parser.add_argument(
        "--drain-limit", type=float, default=30.0, metavar="SECONDS", help="longest wait for in-flight requests"
    )
    parser.add_argument(
        "--exit-on-load-failure",
        action="store_true",
        help="exit 1 when a --model fails its first load (default: stay up, not ready; "
        "$MESHSERVE_EXIT_ON_LOAD_FAILURE=1 sets it, as `meshserve up` does)",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default=None,
        help="console logs: ECS JSON, human-readable text, or auto (text on a terminal, JSON otherwise); "
        "default $MESHSERVE_LOG_FORMAT, else auto",
    )
    parser.set_defaults(func=run)


def preflight(repository: Path, models: dict[str, int | None]) -> str | None:
    """What makes serving impossible before anything loads: no repository, an unknown --model or version."""
    if not repository.is_dir():
        return f"--repository {repository}: no such folder (a model repository holds <name>/config.yaml)"
    known = sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name, version in models.items():
        if name not in known:
            return f"--model {name}: no such model in {repository}; models there: {', '.join(known) or 'none'}"
        if version is not None and not (repository / name / str(version)).is_dir():
            versions = sorted(int(p.name) for p in (repository / name).iterdir() if p.name.isdigit())
            return f"--model {name}:{version}: no version {version} in {repository / name}; versions: {versions}"
    return None


def run(args: argparse.Namespace) -> int:
    import os

    from services.common.settings import EXIT_ON_LOAD_FAILURE_ENV, LOG_FORMAT_ENV

    if args.log_format:
        os.environ[LOG_FORMAT_ENV] = args.log_format  # read by services.common.telemetry at app set-up
    try:
        from services.modelserver.dataplane import Settings
        from services.modelserver.server import GrpcOptions, serve
    except ModuleNotFoundError as exc:
        if exc.name != "onnxruntime":
            raise
        print(MISSING_EXTRA, file=sys.stderr)
        return 2

    models: dict[str, int | None] = {}
    for name, version in args.model:
        if name in models and models[name] != version:
            raise SystemExit(f"--model {name} given twice with different versions")
        models[name] = version
    problem = preflight(args.repository, models)
    if problem:
        print(f"meshserve serve: {problem}", file=sys.stderr)
        return 2
    settings = Settings(
        repository=args.repository.resolve(),
        models=models,
        config_overrides=dict(args.config_override),
        poll_interval=args.poll_interval,
        max_body_bytes=args.max_body_bytes,
        require_device=args.require_device,
    )
    exit_on_failure = args.exit_on_load_failure or os.environ.get(EXIT_ON_LOAD_FAILURE_ENV) == "1"
    grpc = GrpcOptions(args.grpc_port, args.grpc_max_message_bytes)
    return serve(settings, args.host, args.port, args.drain_grace, args.drain_limit, exit_on_failure, grpc)
