"""`python -m services.gateway --spec mesh/mesh.yaml [--port 8080] [--status-port 8100] [--grpc-port N] [--host H] ...`.

Env: MESHSERVE_SPEC (default for --spec), MESHSERVE_DISCOVERY (services.discovery.from_env),
each consumer's API-key variable (e.g. MESHSERVE_API_KEY), OTEL_* for tracing, MESHSERVE_HTTP_*
for header caps and read timeouts (services.common.httpserver).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.common.settings import SPEC_HELP, SettingsError, resolve_spec
from services.gateway.bodylimit import MAX_BODY_BYTES
from services.gateway.serve import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=None, help=SPEC_HELP)
    parser.add_argument("--port", type=int, default=None, help="default: the spec's gateway.port")
    parser.add_argument(
        "--status-port", type=int, default=8100, help="/metrics, /healthz, /ready (Kong's Status API port; 0: any)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger request bodies get 413 (default 64 MiB)"
    )
    parser.add_argument("--drain-grace", type=float, default=0.0, metavar="SECONDS", help="not ready before stopping")
    parser.add_argument(
        "--drain-limit", type=float, default=10.0, metavar="SECONDS", help="longest wait for requests in flight"
    )
    parser.add_argument("--grpc-port", type=int, default=0, help="v2 gRPC listener (ModelInfer etc.); 0 = off")
    args = parser.parse_args(argv)
    if args.max_body_bytes <= 0:
        parser.error("--max-body-bytes must be positive")
    try:
        spec = resolve_spec(args.spec).path
    except SettingsError as exc:
        parser.error(str(exc))
    return serve(
        str(spec),
        port=args.port,
        status_port=args.status_port,
        host=args.host,
        max_body_bytes=args.max_body_bytes,
        drain_grace=args.drain_grace,
        drain_limit=args.drain_limit,
        grpc_port=args.grpc_port,
    )


if __name__ == "__main__":
    sys.exit(main())
