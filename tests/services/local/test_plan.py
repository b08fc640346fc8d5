"""The plan: which processes the demo spec gives, named as the contracts say."""

from __future__ import annotations

import itertools

from mesh.spec import DEFAULT_SPEC_PATH, load_spec
from services.local.plan import GATEWAY_HEALTH, MODEL_HEALTH, STAGE_HEALTH, plan_processes


def test_demo_spec_plan() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    ports = itertools.count(40000)
    plan = plan_processes(spec, DEFAULT_SPEC_PATH, lambda: next(ports), gateway_port=18080)
    assert [p.instance for p in plan] == [
        "digits-v1-0",
        "digits-v1-1",
        "digits-v2-0",
        "resnet-v1-0",
        "digits-classify-preprocess-0",
        "digits-classify-postprocess-0",
        "digits-classify-0",
        "gateway-0",
    ]
    by_instance = {p.instance: p for p in plan}
    v2 = by_instance["digits-v2-0"]
    assert (
        v2.service == "digits-v2" and v2.health_path == MODEL_HEALTH and v2.meta == {"model": "digits", "version": "2"}
    )
    assert v2.argv[1:4] == ("-m", "services.cli", "serve")
    assert v2.argv[v2.argv.index("--model") : v2.argv.index("--model") + 2] == ("--model", "digits:2")
    assert by_instance["digits-classify-0"].health_path == STAGE_HEALTH
    gateway = by_instance["gateway-0"]
    assert gateway.port == 18080 and gateway.health_path == GATEWAY_HEALTH
    # health and metrics on the status port (issue 8): probed there, scraped there
    assert gateway.health_port and gateway.health_port != gateway.port
    assert gateway.health_url == f"http://127.0.0.1:{gateway.health_port}/ready"
    assert gateway.meta == {"metrics_port": str(gateway.health_port)}
    assert gateway.argv[gateway.argv.index("--status-port") + 1] == str(gateway.health_port)
    assert len({p.port for p in plan}) == len(plan)


def test_without_gateway_and_default_port() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    ports = itertools.count(40000)
    assert all(
        p.service != "gateway" for p in plan_processes(spec, DEFAULT_SPEC_PATH, lambda: next(ports), with_gateway=False)
    )
    assert plan_processes(spec, DEFAULT_SPEC_PATH, lambda: next(ports))[-1].port == spec.gateway.port
