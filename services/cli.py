"""The one console script, `meshserve`: a thin dispatcher.

Each subcommand lives next to the code it drives and exposes `register(subparsers)`;
registration modules import nothing heavy, so `meshserve status` never pays for onnxruntime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from services.cliparser import Parser

# Modules that contribute subcommands. Each defines `register(subparsers) -> None` and sets
# `func=` on its parsers. Add one line here per new module; nothing else changes.
COMMAND_MODULES: tuple[str, ...] = (
    "services.modelserver.commands",  # serve
    "services.local.commands",  # up, status
    "mesh.render",  # render, validate
    "mesh.canary_analysis",  # canary set | promote | rollback (mesh.canary) | advance
    "observability.commands",  # rules
    "loadtests.verify",  # verify (end-to-end checks of a running environment)
    "lifecycle.commands",  # model publish | optimize | release | list | show
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("meshserve")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="meshserve",
        description="ONNX models as microservices: serve them, run the local stack, render it for Kubernetes, "
        "and release new versions by canary, all from mesh/mesh.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of the project is not there yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
