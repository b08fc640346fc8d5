"""Pulumi entry point (`main: infra/` in Pulumi.yaml). Pulumi runs this file with infra/ on sys.path;
the program imports the repository's packages (mesh, observability), so the root goes first."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main

main()
