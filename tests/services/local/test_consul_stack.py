"""The supervisor with the Consul backend (against the fake agent: no Consul agent runs here)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from services.discovery.consul import ConsulDiscovery
from services.local.supervisor import LocalStack

from ..discovery.fake_consul import FakeConsulState, fake_consul_app, serve_in_thread
from .conftest import until


def test_supervisor_registers_checks_and_deregisters_in_consul(small_spec: Path, tmp_path: Path) -> None:
    state = FakeConsulState()
    with serve_in_thread(fake_consul_app(state)) as consul_url:
        env = {"MESHSERVE_DISCOVERY": f"consul:{consul_url}"}
        lookup = ConsulDiscovery(consul_url)
        healthy = lambda: [e.instance for e in lookup.lookup("digits-v1")[1]]  # noqa: E731
        with LocalStack(small_spec, run_dir=tmp_path / "run", with_gateway=False, env=env, grace=5) as stack:
            assert sorted(state.services) == ["digits-v1-0", "digits-v1-1"]
            first = stack.instances("digits-v1")[0]
            assert state.services["digits-v1-0"]["checks"][0]["http"] == f"{first.spec.url}/v2/health/ready"
            until(lambda: healthy() == ["digits-v1-0", "digits-v1-1"], 10, "both replicas pass their checks")
            os.kill(first.proc.pid, signal.SIGKILL)
            until(lambda: healthy() == ["digits-v1-1"], 10, "the killed replica leaves the healthy set")
            until(lambda: healthy() == ["digits-v1-0", "digits-v1-1"], 30, "the restarted replica passes again")
        assert state.services == {}  # deregistered on shutdown
        lookup.close()
