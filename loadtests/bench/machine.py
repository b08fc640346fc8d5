"""Facts about the machine and software a benchmark ran on, recorded beside its figures."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git_commit(repo: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def uncommitted(repo: Path, paths: list[str]) -> list[str]:
    """Files under `paths` that differ from the commit (the code measured is then not the commit's)."""
    done = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", *paths], capture_output=True, text=True, check=False
    )
    return [line[3:] for line in done.stdout.splitlines()]


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def machine_facts(repo: Path, extra: dict | None = None) -> dict:
    """Date, CPU, cores, load, Python/onnxruntime versions and the commit, plus `extra`."""
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1_5_15": load_average(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": version_of("onnxruntime"),
        "commit": git_commit(repo),
        "uncommitted_server_or_models": uncommitted(repo, ["services/modelserver", "models"]),
        **(extra or {}),
    }
