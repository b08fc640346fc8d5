"""The gateway following mesh.yaml (services/gateway/reload.py's guard on services/common/specfollow.py):
the metrics of each outcome, and the policy in force after each. The same under load: test_faults.py."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from services.discovery.static import StaticDiscovery
from services.gateway.app import Gateway
from tests.services.gateway.stack import MODELS, base_spec

ENV = {"GW_TEST_KEY": "k1", "GW_TEST_LIMITED_KEY": "k2"}


def reloads(outcome: str) -> float:
    return REGISTRY.get_sample_value("meshserve_gateway_spec_reloads_total", {"outcome": outcome}) or 0.0


def refused_gauge() -> float | None:
    return REGISTRY.get_sample_value("meshserve_gateway_spec_reload_refused")


def gateway(tmp_path: Path) -> tuple[Gateway, Path, dict]:
    spec = base_spec(MODELS)
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(spec))
    table = tmp_path / "endpoints.json"
    table.write_text('{"services": {}}')
    return Gateway(path, StaticDiscovery(table), environ=ENV, settle=0.0), path, spec


def change(path: Path, text: str, tick: list[int]) -> None:
    path.write_text(text)
    tick[0] += 1
    os.utime(path, ns=(tick[0] * 10**9, tick[0] * 10**9))


def test_each_outcome_keeps_or_replaces_the_policy_and_is_counted(tmp_path: Path) -> None:
    gw, path, spec = gateway(tmp_path)
    first = gw.policy
    tick = [1]
    before = {o: reloads(o) for o in ("applied", "invalid", "refused")}

    change(path, "models: [unclosed", tick)
    assert asyncio.run(gw.follower.check(1.0)) == "invalid"
    assert gw.policy is first and reloads("invalid") == before["invalid"] + 1

    gw.last_request = time.perf_counter()  # traffic is flowing
    no_consumers = {**spec, "gateway": {**spec["gateway"], "consumers": []}}
    change(path, yaml.safe_dump(no_consumers), tick)
    assert asyncio.run(gw.follower.check(2.0)) == "refused"
    assert gw.policy is first and reloads("refused") == before["refused"] + 1 and refused_gauge() == 1

    spec["gateway"]["rate_limit"] = {"second": 7}
    change(path, yaml.safe_dump(spec), tick)
    assert asyncio.run(gw.follower.check(3.0)) == "applied"
    assert gw.policy is not first and gw.policy.limits["demo"] == {"second": 7}
    assert reloads("applied") == before["applied"] + 1 and refused_gauge() == 0
