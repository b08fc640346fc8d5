"""Rebuild the committed demo models: `python models/build.py [--only digits|resnet|fixtures]`.

Deterministic: a rebuild with the same library versions reproduces the same predictions (and,
so far, the same bytes). Ends by rewriting models/SHA256SUMS over every committed model.onnx.
"""

from __future__ import annotations

import argparse

import build_digits
import build_fixtures
import build_resnet
from build_common import MODELS_DIR, committed_model_files, write_sha256sums

STEPS = {
    "digits": build_digits.build_all,
    "resnet": build_resnet.build,
    "fixtures": build_fixtures.build,
    "retrained": build_fixtures.build_retrained,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only", choices=sorted(STEPS), help="build just this part (fixtures and retrained need digits v1)"
    )
    args = parser.parse_args(argv)
    for name, step in STEPS.items():
        if args.only in (None, name):
            step()
    sums = write_sha256sums(MODELS_DIR, committed_model_files())
    print(f"wrote {sums.relative_to(MODELS_DIR.parent)}")


if __name__ == "__main__":
    main()
