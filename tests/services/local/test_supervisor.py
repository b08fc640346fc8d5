"""The supervisor against real processes: restart with backoff, clear start-up failures, SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from services.common.traffic import CLIENT, MESH, TRAFFIC_ENV, TrafficSettings
from services.local.plan import ProcessSpec
from services.local.status import pid_alive
from services.local.supervisor import REPO_ROOT, LocalStack, StackError, backoff, free_port

from .conftest import until


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(30) == 30.0


def test_children_run_in_client_traffic_mode_whatever_the_shell_says(small_spec: Path, tmp_path: Path) -> None:
    """No Istio locally: the business API must split traffic itself even if MESHSERVE_TRAFFIC=mesh leaked in."""
    stack = LocalStack(small_spec, run_dir=tmp_path / "run", env={TRAFFIC_ENV: MESH})
    assert TrafficSettings.from_env(stack.env).mode == CLIENT


def test_sigkilled_replica_is_restarted_on_its_port_and_rejoins_discovery(small_spec: Path, tmp_path: Path) -> None:
    with LocalStack(small_spec, run_dir=tmp_path / "run", with_gateway=False, grace=5) as stack:
        endpoints = tmp_path / "run" / "endpoints.json"
        listed = lambda: [e["instance"] for e in orjson.loads(endpoints.read_bytes())["services"].get("digits-v1", [])]  # noqa: E731
        assert listed() == ["digits-v1-0", "digits-v1-1"]
        victim = stack.instances("digits-v1")[1]
        old_pid, port = victim.proc.pid, victim.spec.port
        os.kill(old_pid, signal.SIGKILL)
        until(lambda: listed() == ["digits-v1-0"], 5, "the dead replica leaves discovery")
        until(lambda: victim.proc.pid != old_pid and victim.ready, 30, "the replica is restarted and ready")
        assert victim.spec.port == port and victim.restarts == 1
        assert victim.history == ["exit -9, restart in 0.5s"]
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
        until(lambda: listed() == ["digits-v1-0", "digits-v1-1"], 5, "the replica rejoins discovery")
        stack_file = orjson.loads((tmp_path / "run" / "stack.json").read_bytes())
        assert {p["instance"]: p["pid"] for p in stack_file["processes"]}["digits-v1-1"] == victim.proc.pid
        log = (tmp_path / "run" / "logs" / "supervisor.log").read_text()
        assert "digits-v1-1" in log and "exited with code -9; restarting in 0.5s" in log
        pids = [m.proc.pid for m in stack.processes]
    assert not any(pid_alive(pid) for pid in pids)


def test_a_process_that_dies_at_start_fails_clearly(empty_spec: Path, tmp_path: Path) -> None:
    port = free_port()
    broken = ProcessSpec(
        "broken", "broken-0", (sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"), port, "/ready"
    )
    stack = LocalStack(empty_spec, run_dir=tmp_path / "run", with_gateway=False, extra_processes=[broken])
    with pytest.raises(StackError) as err:
        stack.start()
    message = str(err.value)
    assert "broken-0 exited with code 3 before it was ready" in message
    assert str(tmp_path / "run" / "logs" / "broken-0.log") in message and "boom: bad config" in message


def test_a_process_that_never_gets_ready_times_out(empty_spec: Path, tmp_path: Path) -> None:
    sleeper = ProcessSpec(
        "slow", "slow-0", (sys.executable, "-c", "import time; time.sleep(60)"), free_port(), "/ready"
    )
    stack = LocalStack(
        empty_spec, run_dir=tmp_path / "run", with_gateway=False, extra_processes=[sleeper], ready_timeout=1, grace=2
    )
    with pytest.raises(StackError, match=r"not ready within 1s: slow-0 \(log: .*slow-0.log\)"):
        stack.start()
    assert stack.processes[0].proc.poll() is not None  # stopped on the way out


@pytest.mark.timeout(90)
def test_meshserve_up_status_and_sigterm_stop_every_child(small_spec: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MESHSERVE_API_KEY", None)
    env["MESHSERVE_PROMETHEUS"] = "off"  # observability tests cover it; keep this stack small
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--spec",
            str(small_spec),
            "--run-dir",
            str(run_dir),
            "--no-gateway",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = up.stdout.readline() + up.stdout.readline()  # a blank line, then the banner, once all are ready
        assert "the local stack is ready" in first, first + up.stderr.read()
        status = subprocess.run(
            [sys.executable, "-m", "services.cli", "status", "--run-dir", str(run_dir), "--json"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0, status.stdout + status.stderr
        table = orjson.loads(status.stdout)
        assert [(p["instance"], p["healthy"], p["alive"]) for p in table["processes"]] == [
            ("digits-v1-0", True, True),
            ("digits-v1-1", True, True),
        ]
        children = [p["pid"] for p in table["processes"]]
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
        assert not any(pid_alive(pid) for pid in children)
        shown = subprocess.run(
            [sys.executable, "-m", "services.cli", "status", "--run-dir", str(run_dir)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert shown.returncode == 3 and "NOT running" in shown.stdout and "(gone)" in shown.stdout
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_children_follow_a_sigkilled_supervisor_out(small_spec: Path, tmp_path: Path) -> None:
    """No orphans: SIGKILL leaves the supervisor no chance to stop anyone, so the children notice and drain."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MESHSERVE_PROMETHEUS": "off"}
    argv = [sys.executable, "-m", "services.cli", "up", "--spec", str(small_spec), "--run-dir", str(run_dir)]
    up = subprocess.Popen(
        [*argv, "--no-gateway"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    children: list[int] = []
    try:
        first = up.stdout.readline() + up.stdout.readline()
        assert "the local stack is ready" in first, first + up.stderr.read()
        table = orjson.loads((run_dir / "stack.json").read_bytes())
        children = [p["pid"] for p in table["processes"]]
        assert children and all(pid_alive(pid) for pid in children)
        up.kill()
        up.wait()
        until(lambda: not any(pid_alive(pid) for pid in children), 30, "every child to exit after the supervisor")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in children:  # never leave a process behind, even when the assertion failed
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    """Ports a stack plans must not be taken as the local port of an outgoing connection meanwhile."""
    import socket

    from services.local.supervisor import _ephemeral_range, free_port

    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))
