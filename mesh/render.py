"""`meshserve render` and `meshserve validate`: the compilers' output as YAML for kubectl or GitOps.

`render --stack dev -o out/` reads `Pulumi.dev.yaml` (plain values; no Pulumi CLI needed), compiles
the spec and writes one file per object, named `NNN-<group>-<kind>-<namespace>-<name>.yaml` so that
`kubectl apply -f out/` applies namespaces and core objects before the custom resources. Secrets
are never rendered: the command prints how to create them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

RENDERED = re.compile(r"^\d{3}-[a-z]+-[a-z0-9]+-[a-z0-9_-]+-[a-z0-9.-]+\.yaml$")


def file_name(index: int, group: str, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{index:03d}-{group}-{obj['kind'].lower()}-{meta.get('namespace', '_')}-{meta['name']}.yaml"


def render_objects(spec_path: Path, stack: str, root: Path) -> list[tuple[str, dict[str, Any]]]:
    """(group, object) in apply order; raises SpecError / SettingsError / ValueError on bad input."""
    from mesh.compile import GROUPS, compile_all
    from mesh.compile.settings import load_stack
    from mesh.spec import load_spec

    env = load_stack(stack, root)
    spec = load_spec(spec_path)
    groups = compile_all(spec, env)
    return [(group, obj) for group in GROUPS for obj in groups[group]]


def write_objects(objects: list[tuple[str, dict[str, Any]]], out: Path) -> list[Path]:
    """Replace the previous render in `out` (files named like ours), keep everything else."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() and RENDERED.match(old.name):
            old.unlink()
    written = []
    for index, (group, obj) in enumerate(objects):
        path = out / file_name(index, group, obj)
        path.write_text(yaml.safe_dump(obj, sort_keys=False, width=1000))
        written.append(path)
    return written


def secret_instructions(spec_path: Path, stack: str, root: Path) -> list[str]:
    """A kubectl command per Secret the rendered objects reference but render never writes (values
    come from the user's secret store: shell variables, never literals)."""
    from mesh.compile import kong, logging
    from mesh.compile.settings import load_stack
    from mesh.spec import load_spec

    env = load_stack(stack, root)
    spec = load_spec(spec_path)
    ns = env.namespace or spec.namespace
    lines = []
    if env.tls_secret:
        lines.append(f'kubectl -n {ns} create secret tls {env.tls_secret} --cert="$TLS_CERT" --key="$TLS_KEY"')
    if env.platform.kong:
        for c in spec.gateway.consumers:
            if c.api_key.secret:
                lines.append(
                    f'kubectl -n {ns} create secret generic {c.api_key.secret} --from-literal=key="$KEY" && '
                    f"kubectl -n {ns} label secret {c.api_key.secret} konghq.com/credential=key-auth"
                )
    if env.platform.logging:
        lines.append(
            f"kubectl -n {env.logging_namespace} create secret generic meshserve-elastic-admin "
            "--type=kubernetes.io/basic-auth --from-literal=username=meshserve-admin "
            '--from-literal=password="$PASSWORD" --from-literal=roles=superuser'
        )
        # One APM Server token on both sides (URL-safe, e.g. `openssl rand -hex 32`): keystore, pods' OTLP headers.
        lines.append(
            f"kubectl -n {env.logging_namespace} create secret generic {logging.APM_TOKEN_SECRET} "
            f'--from-literal={logging.APM_TOKEN_KEY}="$APM_TOKEN"'
        )
        lines.append(
            f"kubectl -n {ns} create secret generic {logging.OTLP_HEADERS_SECRET} "
            f'--from-literal={logging.OTLP_HEADERS_KEY}="{logging.OTLP_AUTHORIZATION}$APM_TOKEN"'
        )
        if env.platform.kong:  # Kong's opentelemetry plugin config (configFrom): the same token inside
            template = kong.tracing_config(env, "%s").replace("'", "'\\''")
            lines.append(
                f"kubectl -n {kong.KONG_NAMESPACE} create secret generic {kong.TRACING_SECRET} "
                f'--from-literal={kong.TRACING_SECRET_KEY}="$(printf \'{template}\' "$APM_TOKEN")"'
            )
    return lines


def _render(args: argparse.Namespace) -> int:
    from mesh.compile.settings import SettingsError
    from mesh.spec import SpecError
    from services.common import settings

    root, out = Path(args.root) if args.root else settings.project_root(), Path(args.output)
    try:
        spec_path = settings.resolve_spec(args.spec).path
        objects = render_objects(spec_path, args.stack, root)
        written = write_objects(objects, out)
        secrets = secret_instructions(spec_path, args.stack, root)
    except (SpecError, SettingsError, settings.SettingsError, ValueError, OSError) as exc:
        print(f"meshserve render: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} objects to {out}/ (stack {args.stack})")
    if secrets:
        print("Secrets are not rendered; create them (values from your secret store):", file=sys.stderr)
        for line in secrets:
            print(f"  {line}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from mesh.compile.settings import SettingsError, load_stack
    from mesh.spec import SpecError, load_spec
    from services.common import settings

    try:
        spec_path = settings.resolve_spec(args.spec).path
        spec = load_spec(spec_path)
        if args.stack:
            load_stack(args.stack, Path(args.root) if args.root else settings.project_root())
    except (SpecError, SettingsError, settings.SettingsError) as exc:
        print(exc, file=sys.stderr)
        return 1
    versions = sum(len(m.versions) for m in spec.models.values())
    print(
        f"{spec_path}: valid ({len(spec.models)} models, {versions} versions, {len(spec.pipelines)} pipelines, "
        f"{len(spec.gateway.consumers)} consumers, {len(spec.slos)} SLOs)"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from services.common.settings import SPEC_HELP

    root_help = "folder holding Pulumi.<stack>.yaml (default: the project's root, found from the working directory)"

    render = subparsers.add_parser(
        "render", help="write the Kubernetes/Istio/Kong/KEDA/monitoring objects as YAML (kubectl, GitOps)"
    )
    render.add_argument("--stack", required=True, help="reads Pulumi.<stack>.yaml for environment settings")
    render.add_argument("-o", "--output", required=True, help="output folder (previous renders in it are replaced)")
    render.add_argument("--spec", default=None, help=SPEC_HELP)
    render.add_argument("--root", default=None, help=root_help)
    render.set_defaults(func=_render)

    validate = subparsers.add_parser("validate", help="validate the mesh spec (and a stack's config); exit 1 if bad")
    validate.add_argument("--spec", default=None, help=SPEC_HELP)
    validate.add_argument("--stack", help="also validate Pulumi.<stack>.yaml's meshserve settings")
    validate.add_argument("--root", default=None, help=root_help)
    validate.set_defaults(func=_validate)
