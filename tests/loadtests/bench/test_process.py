"""Pinned server processes: ready by polling, stopped always, a dead start reported with its log."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from loadtests.bench.process import core_busy_seconds, cpu_seconds, free_port, pinned, serving


def test_pinned_prefixes_taskset_only_when_a_core_is_given() -> None:
    assert pinned(["x"], None) == ["x"]
    if shutil.which("taskset"):
        assert pinned(["x", "y"], 0) == ["taskset", "-c", "0", "x", "y"]


def test_serving_yields_once_ready_and_stops_the_process(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with serving(cmd, f"http://127.0.0.1:{port}/", tmp_path / "log", core=0, deadline_s=30) as proc:
        assert proc.poll() is None
        assert cpu_seconds(proc.pid) >= 0.0
    assert proc.poll() is not None


def test_a_server_that_dies_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with (
        pytest.raises(RuntimeError, match=r"exited 3(.|\n)*no model here"),
        serving(cmd, f"http://127.0.0.1:{free_port()}/", tmp_path / "log", deadline_s=30),
    ):
        pass


def test_core_busy_seconds_reads_proc_stat() -> None:
    assert core_busy_seconds(0) > 0.0
    with pytest.raises(ValueError):
        core_busy_seconds(100_000)


def test_wait_for_quiet_is_bounded_and_reports_the_busy_fraction() -> None:
    from loadtests.bench.process import wait_for_quiet

    busy = wait_for_quiet((0,), max_busy=-1.0, window_s=0.1, deadline_s=0.0)  # never quiet enough: one window
    assert 0.0 <= busy <= 1.5
