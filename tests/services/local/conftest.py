"""Specs and helpers for the local-stack tests (real processes on loopback, always torn down)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mesh.spec import DEFAULT_SPEC_PATH

MODELS = DEFAULT_SPEC_PATH.parent.parent / "models"


def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.05)


@pytest.fixture
def small_spec(tmp_path: Path) -> Path:
    """Two replicas of digits v1 and nothing else: the cheapest stack that can lose a replica."""
    path = tmp_path / "mesh.yaml"
    path.write_text(f"repository: {MODELS}\nmodels:\n  digits:\n    versions:\n      1: {{replicas: 2}}\n")
    return path


@pytest.fixture
def empty_spec(tmp_path: Path) -> Path:
    """A valid spec that runs no process (a version with 0 replicas)."""
    path = tmp_path / "empty.yaml"
    path.write_text(f"repository: {MODELS}\nmodels:\n  digits:\n    versions:\n      1: {{replicas: 0}}\n")
    return path
