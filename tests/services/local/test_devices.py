"""The local stack runs a `device: gpu` version on the CPU (no GPU here) and says so plainly: in
`meshserve up`'s output and in `meshserve status` (table and --json), from the server's own metadata."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from services.local.devices import describe, fallback_notes
from tests.services.local.conftest import MODELS, until

REPO_ROOT = MODELS.parent


@pytest.fixture
def gpu_spec(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        f"repository: {MODELS}\nmodels:\n  resnet:\n    required: false\n"
        "    versions:\n      1: {replicas: 1, device: gpu}\n"
    )
    return path


def test_up_and_status_say_a_gpu_version_runs_on_the_cpu_here(gpu_spec: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MESHSERVE_PROMETHEUS": "off"}
    argv = [sys.executable, "-m", "services.cli", "up", "--spec", str(gpu_spec), "--run-dir", str(run_dir)]
    up = subprocess.Popen(
        [*argv, "--no-gateway", "--ready-timeout", "120"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        until(lambda: any("NOTE resnet v1" in line for line in lines) or up.poll() is not None, 150, "up's note")
        text = "".join(lines)
        assert "NOTE resnet v1: the spec places it on a GPU (device: gpu)" in text, text
        assert "runs on the CPU (CPUExecutionProvider)" in text
        assert "on CPU (CPU) - spec says gpu, no GPU provider here" in text  # the process line itself
        status = subprocess.run(
            [sys.executable, "-m", "services.cli", "status", "--run-dir", str(run_dir), "--json"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        (row,) = orjson.loads(status.stdout)["processes"]
        assert row["running_on"] == {"device": "cpu", "providers": ["CPUExecutionProvider"]}
        shown = subprocess.run(
            [sys.executable, "-m", "services.cli", "status", "--run-dir", str(run_dir)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert "RUNS ON" in shown.stdout and "CPU (CPU) - spec says gpu, no GPU provider here" in shown.stdout
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()


def test_a_version_on_the_device_it_asked_for_gets_no_note() -> None:
    cuda = {"device": "gpu", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    cpu = {"device": "cpu", "providers": ["CPUExecutionProvider"]}
    assert fallback_notes([("resnet", "1", "gpu", cuda), ("digits", "1", "cpu", cpu), ("x", "1", "gpu", None)]) == []
    assert describe("gpu", cuda) == "GPU (CUDA,CPU)"
    assert describe("cpu", cpu) == "CPU (CPU)"
    assert describe("gpu", None) == "?"
