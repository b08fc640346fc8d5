"""Export a ResNet-18-topology CNN with seeded random weights: a compute-bound benchmark model."""

from __future__ import annotations

import time

import numpy as np
import torch
from build_common import (
    MODELS_DIR,
    OPSET,
    export_onnx,
    make_deterministic,
    ort_session,
    torch_logits,
    versions,
    write_yaml,
)
from torch import nn

SEED = 0
WIDTH = 32  # ResNet-18 uses 64; half width keeps the file ~12 MB and the compute ~1/4.
BLOCKS = (2, 2, 2, 2)
NUM_CLASSES = 1000


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-18 topology: 7x7/2 stem, maxpool, 4 stages of 2 basic blocks, global avgpool, fc."""

    def __init__(self, width: int = WIDTH, blocks: tuple[int, ...] = BLOCKS, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        layers, c_in = [], width
        for stage, n in enumerate(blocks):
            c_out = width * 2**stage
            for i in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if i == 0 and stage > 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def time_one_inference(session, x: np.ndarray, warmup: int = 3, runs: int = 20) -> dict[str, float]:
    """Median and best wall time of single-image runs; rough, the build machine may be busy."""
    for _ in range(warmup):
        session.run(["logits"], {"input": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(["logits"], {"input": x})
        times.append(time.perf_counter() - start)
    return {"median_ms": round(1000 * float(np.median(times)), 2), "best_ms": round(1000 * min(times), 2)}


def build() -> None:
    make_deterministic(SEED)
    model = ResNet().eval()
    path = MODELS_DIR / "resnet" / "1" / "model.onnx"
    export_onnx(model, torch.zeros(1, 3, 224, 224), path)

    x = np.random.default_rng(SEED).standard_normal((2, 3, 224, 224), dtype=np.float32)
    session = ort_session(path)
    logits = session.run(["logits"], {"input": x})[0]
    assert logits.shape == (2, NUM_CLASSES) and np.isfinite(logits).all()
    np.testing.assert_allclose(logits, torch_logits(model, x), rtol=1e-3, atol=1e-3)
    timing = time_one_inference(session, x[:1])

    n_params = sum(p.numel() for p in model.parameters())
    macs = _conv_linear_macs(model)
    write_yaml(
        path.parent / "metadata.yaml",
        {
            "model": "resnet",
            "version": 1,
            "description": "random weights, for benchmarks only: its outputs mean nothing",
            "built_by": "python models/build.py --only resnet",
            "architecture": ResNet.__doc__ + f" Base width {WIDTH} (ResNet-18: 64).",
            "seed": SEED,
            "init": "kaiming_normal_(fan_out) convs, torch defaults elsewhere; BatchNorm folded into convs",
            "parameters": n_params,
            "multiply_accumulates_per_image": macs,
            "onnx": {"opset": OPSET, "input": "input FP32 [-1,3,224,224]", "output": "logits FP32 [-1,1000]"},
            "inference_one_image_1_thread": timing
            | {"runs": 20, "note": "onnxruntime CPU, intra/inter-op 1 thread, on the build machine; rough"},
            "versions": versions(),
        },
    )
    print(f"resnet v1: {n_params} parameters, {macs / 1e9:.2f} GMAC/image, 1 thread {timing}")


def _conv_linear_macs(model: nn.Module) -> int:
    """Multiply-accumulates of the convolutions and the fc layer for one 224x224 image."""
    total = 0

    def hook(m: nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    return total
