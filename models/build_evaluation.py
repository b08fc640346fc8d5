"""Write `models/digits/evaluation/{inputs,labels}.npy`: the held-out digits split (models/digits_data.py)
as the evaluation data set of digits' contract (`models/digits/evaluation.yaml`).

Needs only numpy and scikit-learn (no torch): `python models/build_evaluation.py`. `np.save` writes the
same bytes for the same arrays, and tests/models/ checks the committed files against the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from digits_data import load_split

OUT = Path(__file__).resolve().parent / "digits" / "evaluation"


def build() -> None:
    _, _, x_test, y_test = load_split()
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "inputs.npy", x_test, allow_pickle=False)
    np.save(OUT / "labels.npy", y_test, allow_pickle=False)
    print(f"wrote {OUT}/inputs.npy {x_test.shape} {x_test.dtype} and labels.npy {y_test.shape} {y_test.dtype}")


if __name__ == "__main__":
    build()
