"""Shared fixtures for the mesh tests: a writable copy of the demo spec whose repository resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.spec import DEFAULT_SPEC_PATH

REPO_ROOT = DEFAULT_SPEC_PATH.parent.parent


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    (tmp_path / "models").symlink_to(REPO_ROOT / "models")
    (tmp_path / "mesh").mkdir()
    path = tmp_path / "mesh" / "mesh.yaml"
    path.write_text(DEFAULT_SPEC_PATH.read_text())
    return path
