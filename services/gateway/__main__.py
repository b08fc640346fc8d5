"""`python -m services.gateway --spec mesh/mesh.yaml [--port 8080] [--host 127.0.0.1]`.

Env: MESHSERVE_SPEC (default for --spec), MESHSERVE_DISCOVERY (services.discovery.from_env),
each consumer's API-key variable (e.g. MESHSERVE_API_KEY), OTEL_* for tracing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from services.gateway.serve import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=os.environ.get("MESHSERVE_SPEC", "mesh/mesh.yaml"), help="mesh.yaml")
    parser.add_argument("--port", type=int, default=None, help="default: the spec's gateway.port")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.spec, port=args.port, host=args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
