"""Pulumi entry point (`main: infra/` in Pulumi.yaml).

Pulumi runs this folder with infra/ itself first on sys.path, where infra/mesh.py would shadow the
repository's `mesh` package: put the repository root there instead, then import by package name.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if p and Path(p).resolve() != HERE)]

from infra.program import main  # noqa: E402

main()
