"""The user's own path, end to end from the wheel: `pip install 'meshserve[cpu,load]'` into a fresh
virtualenv, then, in an empty folder outside this repository, `meshserve init`, `validate`, `up` (a free
gateway port) until ready, one request answered through the gateway, `status`, and a short load test.

Slow (it builds the wheel and installs its dependencies, from pip's cache when warm, from PyPI in CI):
one module, one virtualenv, one stack. Prometheus is left out of this stack (MESHSERVE_PROMETHEUS=off):
the observability tests cover it; this test is about what the wheel carries and where files land.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from services.local.supervisor import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)
IMAGE_ZERO = [[0, 0, 80, 208, 144, 16, 0, 0], [0, 0, 208, 240, 160, 240, 80, 0], [0, 48, 240, 32, 0, 176, 128, 0],
              [0, 64, 192, 0, 0, 128, 128, 0], [0, 80, 128, 0, 0, 144, 128, 0], [0, 64, 176, 0, 16, 192, 112, 0],
              [0, 32, 224, 80, 160, 192, 0, 0], [0, 0, 96, 208, 160, 0, 0, 0]]  # fmt: skip


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)], out, env)
    (built,) = out.glob("meshserve-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (not this one's packages) with the wheel and its cpu and load extras."""
    root = tmp_path_factory.mktemp("venv") / "v"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run([sys.executable, "-m", "venv", str(root)], root.parent, env)
    run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[cpu,load]"], root.parent, env)
    return root


def test_the_wheel_carries_the_project_files_and_not_the_benchmark_model(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "mesh/mesh.yaml",
        "loadtests/locust.conf",
        "observability/dashboards/model-serving.json",
        "services/local/demo/digits/config.yaml",
        "services/local/demo/digits/labels.txt",
        "services/local/demo/digits/1/model.onnx",
        "services/local/demo/digits/2/model.onnx",
    ):
        assert shipped in names, shipped
    assert not [n for n in names if "resnet" in n and n.endswith(".onnx")]  # 12 MB of benchmark weights stay out
    assert not [n for n in names if n.startswith(("tests/", "runs/"))]


def test_init_validate_up_request_status_and_a_load_test_outside_the_repository(
    venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bin_ = venv / "bin"
    home = tmp_path_factory.mktemp("user")  # an empty folder, far from this repository
    assert REPO not in home.parents
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHSERVE_", "LOADTEST_"))}
    env.pop("PYTHONPATH", None)
    env.update(PATH=f"{bin_}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv), MESHSERVE_PROMETHEUS="off")
    where = run([str(bin_ / "python"), "-c", "import services; print(services.__file__)"], home, env).stdout
    assert str(venv) in where and str(REPO) not in where  # the installed package, not this checkout

    assert "created a meshserve project" in run([str(bin_ / "meshserve"), "init", "demo"], home, env).stdout
    project = home / "demo"
    assert len(list((project / "dashboards").glob("*.json"))) >= 5  # load_dashboards() from the package data
    assert "valid (1 models, 2 versions" in run([str(bin_ / "meshserve"), "validate"], project, env).stdout

    port = free_port()
    up = subprocess.Popen(
        [str(bin_ / "meshserve"), "up", "--gateway-port", str(port)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _until_ready(up)
        current = project / "runs" / "current"
        assert (current / "stack.json").is_file()  # runs/ under the project, not site-packages
        assert not list(venv.glob("lib/python*/site-packages/runs"))
        key = (current / "api-keys.env").read_text().strip().removeprefix("export MESHSERVE_API_KEY=")
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/digits:classify",
            json={"image": IMAGE_ZERO},
            headers={"apikey": key},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["label"] == "0" and reply.headers["x-model-version"] in ("1", "2")

        status = run([str(bin_ / "meshserve"), "status", "--json"], project, env)
        rows = json.loads(status.stdout)["processes"]
        assert {r["instance"] for r in rows} >= {"digits-v1-0", "digits-v1-1", "digits-v2-0", "gateway-0"}
        assert all(r["healthy"] for r in rows)

        load_env = {**env, "MESHSERVE_API_KEY": key, "LOADTEST_SLO_P95": "2s", "LOADTEST_SLO_P99": "4s"}
        out = project / "runs" / "load"
        command = [str(bin_ / "python"), "-m", "loadtests", "run", "--host", f"http://127.0.0.1:{port}"]
        command += ["--duration", "4s", "--users", "2", "--rps-per-user", "5", "--out", str(out)]
        load = run(command, project, load_env)
        assert "SLO gate: PASS" in load.stdout + load.stderr
        verdicts = json.loads((out / "verdicts.json").read_text())
        assert verdicts["figures"]["requests"] > 0 and verdicts["figures"]["failures"] == 0
        assert (out / "latency.png").stat().st_size > 0 and "slo-gate" in (out / "report.html").read_text()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()


def _until_ready(up: subprocess.Popen) -> None:
    """Reads `up`'s banner: the line that says the stack is ready (or the output of a failed start)."""
    seen = []
    while True:
        line = up.stdout.readline()
        if not line:
            raise AssertionError("up ended before it was ready:\n" + "".join(seen) + up.stderr.read())
        seen.append(line)
        if "the local stack is ready" in line:
            return
