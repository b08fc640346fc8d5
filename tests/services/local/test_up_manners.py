"""`meshserve up` as a user meets it: it never says "ready" when it is not, and says why it stopped.

Each test is one situation a new user met (issue: "up says ready when it is not"): a taken port, a
corrupt model file; and the happy path's manners: progress per process, the API key masked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.local.supervisor import REPO_ROOT, free_port

from .conftest import MODELS

UP = [sys.executable, "-m", "services.cli", "up"]


def up_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MESHSERVE_PROMETHEUS": "off"}
    env.pop("MESHSERVE_API_KEY", None)
    env.pop("MESHSERVE_SPEC", None)
    return env


def test_a_taken_port_fails_before_anything_starts_naming_the_port_and_its_holder(
    small_spec: Path, tmp_path: Path
) -> None:
    """The old `up` printed "ready" with another process's URL while its gateway crash-looped."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        argv = [*UP, "--spec", str(small_spec), "--run-dir", str(tmp_path / "run"), "--gateway-port", str(port)]
        done = subprocess.run(argv, cwd=tmp_path, env=up_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ready" not in done.stdout
    assert f"port {port} (gateway-0) is already in use by pid {os.getpid()}" in done.stderr, done.stderr
    assert not (tmp_path / "run" / "stack.json").exists()  # nothing was started


@pytest.fixture
def corrupt_repository(tmp_path: Path) -> Path:
    """digits with v1's model.onnx replaced by bytes that are not ONNX."""
    repo = tmp_path / "models"
    shutil.copytree(MODELS / "digits", repo / "digits", ignore=shutil.ignore_patterns("2"))
    (repo / "digits" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    spec = tmp_path / "mesh.yaml"
    spec.write_text(f"repository: {repo}\nmodels:\n  digits:\n    versions:\n      1: {{replicas: 1}}\n")
    return spec


@pytest.mark.timeout(120)
def test_a_model_that_cannot_load_fails_fast_with_the_load_error(corrupt_repository: Path, tmp_path: Path) -> None:
    """The old `up` waited out the whole ready timeout, then printed no reason."""
    run = tmp_path / "run"
    argv = [*UP, "--spec", str(corrupt_repository), "--run-dir", str(run), "--no-gateway", "--ready-timeout", "600"]
    done = subprocess.run(argv, cwd=tmp_path, env=up_env(), capture_output=True, text=True, timeout=110)
    assert done.returncode == 1
    assert "ready" not in done.stdout
    assert "digits-v1: digits-v1-0 exited with code 1 before it was ready" in done.stderr, done.stderr
    assert "--model digits did not load" in done.stderr  # the log's tail, with onnxruntime's reason:
    assert "version 1" in done.stderr and "not ready within" not in done.stderr
    lines = (run / "logs" / "supervisor.log").read_text().splitlines()
    assert lines and all(json.loads(line)["service"]["name"] == "supervisor" for line in lines)  # files: JSON


@pytest.mark.timeout(120)
def test_up_reports_each_process_as_it_gets_ready_and_masks_the_generated_key(small_spec: Path, tmp_path: Path) -> None:
    spec = small_spec.with_name("keyed.yaml")
    consumer = "gateway:\n  consumers:\n    - {username: demo, api_key: {env: MESHSERVE_API_KEY}}\n"
    spec.write_text(small_spec.read_text() + consumer)
    run = tmp_path / "run"
    argv = [*UP, "--spec", str(spec), "--run-dir", str(run), "--gateway-port", str(free_port())]
    up = subprocess.Popen(argv, cwd=tmp_path, env=up_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        progress = []
        while not any("(3/3 ready)" in line for line in progress):
            line = up.stderr.readline()
            assert line, "up ended before everything was ready: " + "".join(progress)
            progress.append(line)
        banner = "".join(up.stdout.readline() for _ in range(2))
        assert "the local stack is ready" in banner
        text = "".join(progress)
        for instance in ("digits-v1-0", "digits-v1-1", "gateway-0"):  # plain lines off a terminal
            assert f"{instance}" in text and any(instance in ln and " ready " in ln for ln in progress), text
        keys = run / "api-keys.env"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
        key = keys.read_text().strip().removeprefix("export MESHSERVE_API_KEY=")
        assert len(key) > 16
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
        out, err = up.stdout.read(), up.stderr.read()  # not communicate(): it skips what readline() buffered
        assert key not in banner + out + err + text  # never on the terminal unless --show-key
        assert f"source {keys}" in banner + out
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_show_key_prints_it_and_a_key_from_the_environment_stays_masked() -> None:
    from types import SimpleNamespace as NS

    from services.local.commands import example

    gateway = NS(spec=NS(url="http://127.0.0.1:1"))
    stack = NS(
        run_dir=Path("/r"), log_dir=Path("/r/logs"), processes=[],
        instances=lambda service: [gateway] if service == "gateway" else [],
        spec=NS(gateway=NS(key_names=["apikey"]), models={}, pipelines={}),
        api_keys={"demo": ("MESHSERVE_API_KEY", "s3cret-key-value", True)},
    )  # fmt: skip
    assert "s3cret-key-value" not in example(stack) and "source /r/api-keys.env" in example(stack)
    assert "export MESHSERVE_API_KEY=s3cret-key-value" in example(stack, show_key=True)
    stack.api_keys = {"demo": ("MESHSERVE_API_KEY", "s3cret-key-value", False)}  # the user's own key
    assert "s3cret-key-value" not in example(stack, show_key=True) and "s3cr********" in example(stack)


def test_serve_refuses_a_missing_repository_and_an_unknown_model(tmp_path: Path) -> None:
    """The old `serve` reported ready with zero models in both cases."""
    serve = [sys.executable, "-m", "services.cli", "serve", "--port", str(free_port())]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    missing = subprocess.run(
        [*serve, "--repository", str(tmp_path / "nonexistent")], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert f"--repository {tmp_path / 'nonexistent'}: no such folder" in missing.stderr
    unknown = subprocess.run(
        [*serve, "--repository", str(MODELS), "--model", "nosuch"], env=env, capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2
    assert "--model nosuch: no such model in" in unknown.stderr and "digits" in unknown.stderr
    version = subprocess.run(
        [*serve, "--repository", str(MODELS), "--model", "digits:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 2 and "no version 9" in version.stderr and "[1, 2]" in version.stderr


def test_serve_without_onnxruntime_names_the_extra_to_install(tmp_path: Path) -> None:
    """`pip install meshserve` without an extra: a raw ModuleNotFoundError before."""
    code = (
        "import sys; sys.modules['onnxruntime'] = None; from services.cli import main; "
        f"sys.exit(main(['serve', '--repository', {str(MODELS)!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "pip install 'meshserve[cpu]'" in done.stderr and "Traceback" not in done.stderr
