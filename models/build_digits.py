"""Train the `digits` CNN versions on the fixed split and export them with their measured accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from build_common import (
    MODELS_DIR,
    OPSET,
    accuracy,
    export_onnx,
    make_deterministic,
    ort_logits,
    torch_logits,
    versions,
    write_yaml,
)
from digits_data import SPLIT_PARAMS, load_split
from torch import nn


@dataclass(frozen=True)
class DigitsSpec:
    """Everything that defines one trained version; recorded verbatim in its metadata."""

    version: int
    seed: int
    channels: tuple[int, int]
    hidden: int
    dropout: float
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float


SPECS = (
    DigitsSpec(1, seed=0, channels=(16, 32), hidden=64, dropout=0.0, epochs=30, batch_size=32,
               learning_rate=2e-3, weight_decay=0.0),
    # A different seed and a wider net with dropout: about as accurate, a few different answers.
    DigitsSpec(2, seed=7, channels=(24, 48), hidden=96, dropout=0.2, epochs=30, batch_size=32,
               learning_rate=2e-3, weight_decay=1e-4),
)  # fmt: skip


class DigitsCNN(nn.Module):
    """conv3x3-relu, conv3x3-relu, maxpool 2 (8x8 -> 4x4), linear-relu, [dropout], linear -> 10 logits."""

    def __init__(self, channels: tuple[int, int], hidden: int, dropout: float) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 4 * 4, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train(spec: DigitsSpec, x: np.ndarray, y: np.ndarray) -> DigitsCNN:
    """Mini-batch Adam with a seeded shuffle: same spec and data give the same weights."""
    make_deterministic(spec.seed)
    model = DigitsCNN(spec.channels, spec.hidden, spec.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    shuffle = torch.Generator().manual_seed(spec.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(spec.epochs):
        order = torch.randperm(len(xt), generator=shuffle)
        for start in range(0, len(xt), spec.batch_size):
            idx = order[start : start + spec.batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def build_version(spec: DigitsSpec, split: tuple[np.ndarray, ...]) -> tuple[np.ndarray, dict]:
    """Train, export, verify onnxruntime against torch; return the ONNX test logits and metadata."""
    x_train, y_train, x_test, y_test = split
    model = train(spec, x_train, y_train)
    path = MODELS_DIR / "digits" / str(spec.version) / "model.onnx"
    export_onnx(model, torch.from_numpy(x_test[:1]), path)

    torch_correct, _ = accuracy(torch_logits(model, x_test), y_test)
    logits = ort_logits(path, x_test)
    correct, acc = accuracy(logits, y_test)
    assert correct == torch_correct, f"v{spec.version}: onnxruntime {correct} vs torch {torch_correct}"
    np.testing.assert_allclose(logits, torch_logits(model, x_test), rtol=1e-4, atol=1e-4)
    assert acc >= 0.95, f"digits v{spec.version} held-out accuracy {acc:.4f} < 0.95"

    print(f"digits v{spec.version}: test accuracy {acc:.4f} ({correct}/{len(y_test)})")
    return logits, metadata(spec, model, correct, acc, len(y_test), len(y_train))


def metadata(spec: DigitsSpec, model: nn.Module, correct: int, acc: float, n_test: int, n_train: int) -> dict:
    return {
        "model": "digits",
        "version": spec.version,
        "description": "small CNN on scikit-learn's bundled 8x8 digits",
        "built_by": "python models/build.py --only digits",
        "architecture": DigitsCNN.__doc__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items() if k != "version"}
        | {"optimizer": "Adam", "loss": "cross-entropy", "threads": 1, "deterministic_algorithms": True},
        "split": dict(SPLIT_PARAMS) | {"n_train": n_train, "n_test": n_test},
        "held_out": {
            "accuracy": acc,
            "correct": correct,
            "total": n_test,
            "measured_with": "onnxruntime CPU, 1 thread, whole test split as one batch (equals torch)",
        },
        "onnx": {"opset": OPSET, "input": "input FP32 [-1,1,8,8]", "output": "logits FP32 [-1,10]"},
        "versions": versions(),
    }


def build_all() -> None:
    split = load_split()
    built = {spec.version: build_version(spec, split) for spec in SPECS}
    v1, v2 = built[1][0].argmax(axis=1), built[2][0].argmax(axis=1)
    agree, n_diff = float((v1 == v2).mean()), int((v1 != v2).sum())
    assert n_diff > 0 and agree >= 0.9, f"v1/v2 should differ a little: {n_diff} differ, agreement {agree}"
    built[2][1]["agreement_with_v1"] = {"split": "test", "top1_agreement": agree, "differing_images": n_diff}
    for version, (_, meta) in built.items():
        write_yaml(MODELS_DIR / "digits" / str(version) / "metadata.yaml", meta)
    print(f"digits v1/v2 top-1 agreement {agree:.4f} ({n_diff} test images differ)")
