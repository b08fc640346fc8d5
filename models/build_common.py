"""Helpers shared by the model build scripts: determinism, ONNX export and checks, file output.

Build-time only (needs torch); tests and servers never import this module.
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent
OPSET = 17
# Built by scripts but never committed (too large): left out of SHA256SUMS.
UNCOMMITTED_MODELS = frozenset({"minilm"})


def make_deterministic(seed: int) -> None:
    """Seed every RNG and force deterministic, single-threaded kernels so rebuilds reproduce."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export with a dynamic batch axis (`input` -> `logits`), check the graph, write atomically."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript and gives stable files.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )
    save_checked(onnx.load(str(tmp)), path)
    tmp.unlink(missing_ok=True)


def save_checked(proto: onnx.ModelProto, path: Path) -> None:
    """Run the full ONNX checker (with shape inference) and write the model atomically."""
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, path)


def ort_session(path: Path) -> ort.InferenceSession:
    """A one-thread CPU session, the same settings the tests use to recompute figures."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of the ONNX model at `path` for the whole batch `x` in one run."""
    return ort_session(path).run(["logits"], {"input": x})[0]


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    """(number correct, fraction correct) of the top-1 predictions."""
    correct = int((logits.argmax(axis=1) == labels).sum())
    return correct, correct / len(labels)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose top-1 class is the same in both logit arrays."""
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def versions() -> dict[str, str]:
    """Library versions recorded in metadata, to explain any drift on a rebuild."""
    import sklearn

    return {
        "torch": str(torch.__version__),
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, but short scalar lists on one line (`channels: [16, 32]`)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = not any(isinstance(x, list | dict) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, default_flow_style=False))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sha256sums(root: Path, files: list[Path]) -> Path:
    """Write `root/SHA256SUMS` in sha256sum format with paths relative to `root`."""
    lines = [f"{sha256_file(f)}  {f.relative_to(root).as_posix()}\n" for f in sorted(files)]
    out = root / "SHA256SUMS"
    out.write_text("".join(lines))
    return out


def committed_model_files() -> list[Path]:
    """Every `models/<name>/<version>/model.onnx` that belongs in git."""
    return [
        p
        for p in MODELS_DIR.glob("*/*/model.onnx")
        if p.parent.name.isdigit() and p.parent.parent.name not in UNCOMMITTED_MODELS
    ]
