"""Triton's perf_analyzer against `meshserve serve`, over HTTP or gRPC.

The PyPI `perf-analyzer` wheel needs glibc 2.38; tritonclient 2.46's wheel bundles a perf_analyzer
binary that runs on Debian 12. It lives in its own virtualenv (its `[grpc]` extra pins a protobuf
older than the one our stubs may use), created on first use under the cache folder:

    .venv/bin/python -m loadtests.bench.perf_analyzer -m digits -u 127.0.0.1:8001 -i grpc \
        --concurrency-range 1:8:2

Everything after the module name goes to perf_analyzer unchanged. The binary also needs Debian's
libb64-0d (`make system-deps` installs it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from services.common.proto import cache_root

PINS = ("tritonclient[all]==2.46.0", "nvidia-cuda-runtime-cu12")
THROUGHPUT = re.compile(r"throughput: ([0-9.]+) infer/sec")


def venv_dir() -> Path:
    return cache_root() / "perf-analyzer-2.46.0"


def ensure() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment it runs in; installs the venv once."""
    venv = venv_dir()
    binary = venv / "bin" / "perf_analyzer"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PINS], check=True)
    libs = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join([*map(str, libs), os.environ.get("LD_LIBRARY_PATH", "")])}
    return binary, env


def throughputs(output: str) -> list[float]:
    """Every 'throughput: N infer/sec' perf_analyzer printed (one per concurrency)."""
    return [float(m) for m in THROUGHPUT.findall(output)]


def main(argv: list[str] | None = None) -> int:
    binary, env = ensure()
    return subprocess.run([str(binary), *(sys.argv[1:] if argv is None else argv)], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
