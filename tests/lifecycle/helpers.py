"""Shared by the lifecycle tests: a temporary model repository and spec, the fixture candidates, and
a snapshot of a repository's files to prove that a refused or interrupted publish wrote nothing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from mesh.canary import dump
from mesh.spec import read_yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "models"
RETRAINED = FIXTURES / "digits_retrained" / "model.onnx"  # v1's recipe, seed 11: passes the gates
BAD = FIXTURES / "digits_bad" / "model.onnx"  # v1 with rotated logits: fails accuracy and agreement
RESNET = REPO / "models" / "resnet" / "1" / "model.onnx"


def make_repository(tmp: Path, models: tuple[str, ...] = ("digits",)) -> Path:
    """A temp copy of models/<name> (config, contract, evaluation data, versions)."""
    repo = tmp / "models"
    for name in models:
        shutil.copytree(REPO / "models" / name, repo / name, ignore=shutil.ignore_patterns("*.tmp"))
    return repo


def make_spec(tmp: Path, repo: Path) -> Path:
    """mesh.yaml pointing at `repo`, with only the models that `repo` holds."""
    doc = read_yaml(REPO / "mesh" / "mesh.yaml")
    doc["repository"] = str(repo)
    for name in list(doc["models"]):
        if not (repo / name).is_dir():
            del doc["models"][name]
    path = tmp / "mesh.yaml"
    path.write_text(dump(doc))
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
