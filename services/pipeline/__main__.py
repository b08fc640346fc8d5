"""`python -m services.pipeline --service NAME --port P`: run one pipeline service named in the spec."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mesh.spec import MeshSpec, load_spec
from services.common.settings import SPEC_HELP, SettingsError, resolve_spec


def build(spec_path: Path, spec: MeshSpec, service: str):
    """The app for `service`: a pipeline's business API, or one of its stages."""
    if service in spec.pipelines:
        from services.common.traffic import TrafficSettings
        from services.discovery import from_env
        from services.pipeline.business import build_app

        try:
            traffic = TrafficSettings.from_env()
        except ValueError as exc:
            raise SystemExit(f"{service}: {exc}") from None
        return build_app(service, spec_path, from_env(), traffic)
    for name, pipeline, stage in spec.stage_services():
        if name != service:
            continue
        if stage.kind == "image-preprocess":
            from services.pipeline.preprocess import Params, build_app

            return build_app(service, Params.from_spec(stage.params))
        from services.pipeline.postprocess import build_app, load_labels

        model = pipeline.model_stage().model
        labels = load_labels(spec.repository_path(spec_path.parent) / model / "labels.txt")
        return build_app(service, int(stage.params.get("top_k", 5)), labels)
    known = [*spec.pipelines, *(name for name, _, _ in spec.stage_services())]
    raise SystemExit(f"no pipeline service {service!r} in {spec_path}; known: {known}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.pipeline", description=__doc__)
    parser.add_argument("--service", required=True, help="a pipeline name or <pipeline>-<stage>")
    parser.add_argument("--spec", type=Path, default=None, help=SPEC_HELP)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drain-grace", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        spec_path = resolve_spec(args.spec).path
    except SettingsError as exc:
        parser.error(str(exc))
    app = build(spec_path, load_spec(spec_path), args.service)

    from services.common.lifecycle import follow_supervisor
    from services.pipeline.service import run

    follow_supervisor()
    return run(app, args.host, args.port, args.drain_grace)


if __name__ == "__main__":
    sys.exit(main())
