"""`python -m observability.console --spec mesh.yaml --run-dir RUN --port P`: the local console's server."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from observability.prometheus import DEFAULT_SCRAPE_INTERVAL, SCRAPE_INTERVAL_ENV


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from mesh.spec import parse_duration
    from observability.console.app import Console, build_app

    parser = argparse.ArgumentParser(prog="python -m observability.console", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="mesh.yaml (re-read when it changes)")
    parser.add_argument("--run-dir", type=Path, default=None, help="the stack's run dir (finds its Prometheus)")
    parser.add_argument("--prometheus", default=None, help="Prometheus URL (default: the run dir's)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--scrape-interval",
        default=os.environ.get(SCRAPE_INTERVAL_ENV, DEFAULT_SCRAPE_INTERVAL),
        help=f"Prometheus's scrape interval, for $__rate_interval (default {DEFAULT_SCRAPE_INTERVAL})",
    )
    args = parser.parse_args(argv)
    console = Console(args.spec.resolve(), args.run_dir, parse_duration(args.scrape_interval), args.prometheus)
    console.refresh()
    if console.spec is None:
        print(f"console: {console.spec_error}", file=sys.stderr)
        return 2
    print(f"console at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(build_app(console), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
