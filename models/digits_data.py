"""The fixed train/test split of scikit-learn's bundled digits, shared by the build and by tests.

Importable without torch (only numpy and scikit-learn), so end-to-end tests can classify the
same held-out images the models were measured on: insert ``models/`` into ``sys.path`` and
``from digits_data import load_split``.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# Recorded in every digits metadata.yaml: changing them changes every measured figure.
SPLIT_PARAMS: dict[str, object] = {
    "dataset": "sklearn.datasets.load_digits",
    "scaling": "value / 16 -> [0, 1]",
    "test_size": 0.25,
    "random_state": 0,
    "stratify": True,
}
LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_test, y_test)``; images float32 [N,1,8,8] in [0,1], labels int64."""
    digits = load_digits()
    images = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=SPLIT_PARAMS["test_size"],
        random_state=SPLIT_PARAMS["random_state"],
        stratify=labels,
    )
    return (
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(x_test),
        np.ascontiguousarray(y_test),
    )
