"""`meshserve init`, `meshserve up` and `meshserve status`. Imports nothing heavy until a command runs.

All three find the project the same way (services/common/settings.py): `up` writes its run under the
project's runs/, `status` reads runs/current of the same project.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.common.settings import RUN_DIR_HELP, SPEC_HELP

# sklearn digits image 0 (a "0"), on the 8-bit scale: the example request `up` prints.
EXAMPLE_IMAGE = [
    [0, 0, 80, 208, 144, 16, 0, 0],
    [0, 0, 208, 240, 160, 240, 80, 0],
    [0, 48, 240, 32, 0, 176, 128, 0],
    [0, 64, 192, 0, 0, 128, 128, 0],
    [0, 80, 128, 0, 0, 144, 128, 0],
    [0, 64, 176, 0, 16, 192, 112, 0],
    [0, 32, 224, 80, 160, 192, 0, 0],
    [0, 0, 96, 208, 160, 0, 0, 0],
]


def register(subparsers: argparse._SubParsersAction) -> None:
    init = subparsers.add_parser(
        "init", help="create a project (mesh/mesh.yaml, the demo models, dashboards, load-test config) in DIR"
    )
    init.add_argument("directory", nargs="?", type=Path, default=Path("."), metavar="DIR", help="project folder")
    init.add_argument("--force", action="store_true", help="overwrite the files of an existing project")
    init.set_defaults(func=run_init)

    up = subparsers.add_parser("up", help="start the whole local stack from mesh.yaml (Ctrl-C drains and stops it)")
    up.add_argument("--spec", default=None, help=SPEC_HELP)
    up.add_argument(
        "--run-dir", type=Path, default=None, help="default: runs/<timestamp> in the project (runs/current links to it)"
    )
    up.add_argument("--gateway-port", type=int, default=None, help="default: the spec's gateway.port")
    up.add_argument("--no-gateway", action="store_true", help="start everything but the gateway")
    up.add_argument(
        "--ready-timeout", type=float, default=60.0, metavar="SECONDS", help="give up when not all are ready by then"
    )
    up.add_argument(
        "--show-key", action="store_true", help="print generated API keys (default: masked; `source` the keys file)"
    )
    up.set_defaults(func=run_up)

    status = subparsers.add_parser("status", help="show what the local stack runs where and whether it is healthy")
    status.add_argument("--run-dir", type=Path, default=None, help=RUN_DIR_HELP)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)


def mask(key: str) -> str:
    """Enough of a key to tell two apart, never enough to use it."""
    return f"{key[:4]}{'*' * 8}" if len(key) > 8 else "*" * 8


def example(stack, show_key: bool = False) -> str:
    """Endpoints (versions with what they really run on, fallbacks called out), a request; keys masked unless asked."""
    import httpx
    import orjson

    from services.local.devices import describe, fallback_notes, running_on
    from services.local.supervisor import API_KEYS_FILE

    lines = ["", "meshserve: the local stack is ready", f"  run dir: {stack.run_dir}  (logs in {stack.log_dir})", ""]
    seen: dict[tuple[str, str], dict | None] = {}
    with httpx.Client(timeout=5) as client:
        for managed in stack.processes:
            spec = managed.spec
            line = f"  {spec.service:32} {spec.instance:34} {spec.url}  (pid {managed.proc.pid})"
            if "model" in spec.meta:
                model, version = spec.meta["model"], spec.meta["version"]
                actual = running_on(client, spec.url, model, version)
                seen.setdefault((model, version), actual)
                line += f"  on {describe(stack.spec.models[model].versions[int(version)].device, actual)}"
            lines.append(line)
    notes = [(m, v, stack.spec.models[m].versions[int(v)].device, a) for (m, v), a in seen.items()]
    lines += ["", *fallback_notes(notes)] if fallback_notes(notes) else []
    console = stack.instances("console")
    if console:
        lines += ["", f"  console (live panels from the local Prometheus): {console[0].spec.url}/"]
    gateway = stack.instances("gateway")
    if gateway:
        base = gateway[0].spec.url
        lines.append("")
        for username, (var, key, generated) in stack.api_keys.items():
            if not generated:
                lines.append(f"  consumer {username!r}: API key from ${var} ({mask(key)})")
            elif show_key:
                lines += [f"  {var} was unset: generated a key for consumer {username!r}:", f"  export {var}={key}"]
            else:
                lines += [
                    f"  {var} was unset: generated a key for consumer {username!r} ({mask(key)}); to use it:",
                    f"  source {stack.run_dir / API_KEYS_FILE}",
                ]
        var = next(iter(stack.api_keys.values()), ("MESHSERVE_API_KEY",))[0]
        header = stack.spec.gateway.key_names[0]
        body = orjson.dumps({"image": EXAMPLE_IMAGE}).decode()
        for model in stack.spec.models:
            lines.append(f"  direct v2 access: POST {base}/v2/models/{model}/infer  (weighted across versions)")
        for pipeline in stack.spec.pipelines.values():
            lines += [
                "",
                "  try it:",
                f"  curl -s -X POST '{base}{pipeline.route}' -H \"{header}: ${var}\" \\",
                f"       -H 'content-type: application/json' -d '{body}'",
            ]
    return "\n".join(lines)


def run_init(args: argparse.Namespace) -> int:
    from services.local.project import ProjectError, init

    try:
        written = init(args.directory, force=args.force)
    except ProjectError as exc:
        print(f"meshserve init: {exc}", file=sys.stderr)
        return 2
    root = args.directory.resolve()
    print(f"created a meshserve project in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    cd = "" if root == Path.cwd().resolve() else f"cd {args.directory} && "
    print(f"next: {cd}meshserve validate && meshserve up")
    return 0


def run_up(args: argparse.Namespace) -> int:
    from mesh.spec import SpecError
    from services.common.settings import SettingsError, resolve_spec
    from services.local.observers import HOOKS
    from services.local.progress import Progress
    from services.local.supervisor import LocalStack, StackError, run_until_signalled

    try:
        stack = LocalStack(
            resolve_spec(args.spec).path,
            run_dir=args.run_dir,
            gateway_port=args.gateway_port,
            with_gateway=not args.no_gateway,
            ready_timeout=args.ready_timeout,
        )
    except (SpecError, SettingsError) as exc:
        print(f"meshserve up: {exc}", file=sys.stderr)
        return 2
    for hook in HOOKS:  # Prometheus and the console (services/local/observers.py)
        stack.add_processes(hook(stack))
    print(f"meshserve up: {stack.spec_path} -> {stack.run_dir}", file=sys.stderr, flush=True)
    stack.progress = progress = Progress(len(stack.processes))
    try:
        stack.start()
    except StackError as exc:
        progress.close()
        print(f"meshserve up: {exc}", file=sys.stderr)
        return 1
    progress.close()
    return run_until_signalled(stack, example(stack, args.show_key))


def run_status(args: argparse.Namespace) -> int:
    import orjson

    from services.common.settings import resolve_run_dir
    from services.local.status import probe, read_stack, render

    try:
        stack = read_stack(resolve_run_dir(args.run_dir).path)
    except FileNotFoundError as exc:
        print(f"meshserve status: {exc}", file=sys.stderr)
        return 1
    rows = probe(stack["processes"])
    if args.json:
        print(orjson.dumps({**stack, "processes": rows}, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(stack, rows))
    return 0 if all(r["healthy"] for r in rows) else 3
