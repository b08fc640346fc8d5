"""`python -m services.gateway --spec mesh/mesh.yaml [--port 8080] [--host 127.0.0.1] [--max-body-bytes N]
[--grpc-port N]`.

Env: MESHSERVE_SPEC (default for --spec), MESHSERVE_DISCOVERY (services.discovery.from_env),
each consumer's API-key variable (e.g. MESHSERVE_API_KEY), OTEL_* for tracing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from services.gateway.app import MAX_BODY_BYTES
from services.gateway.serve import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=os.environ.get("MESHSERVE_SPEC", "mesh/mesh.yaml"), help="mesh.yaml")
    parser.add_argument("--port", type=int, default=None, help="default: the spec's gateway.port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger request bodies get 413 (default 64 MiB)"
    )
    parser.add_argument("--grpc-port", type=int, default=0, help="v2 gRPC listener (ModelInfer etc.); 0 = off")
    args = parser.parse_args(argv)
    if args.max_body_bytes <= 0:
        parser.error("--max-body-bytes must be positive")
    serve(args.spec, port=args.port, host=args.host, max_body_bytes=args.max_body_bytes, grpc_port=args.grpc_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
