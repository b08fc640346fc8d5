"""The plan: which processes the demo spec gives, named as the contracts say."""

from __future__ import annotations

import itertools

from mesh.spec import DEFAULT_SPEC_PATH, Grpc, load_spec
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
    assert v2.service == "digits-v2" and v2.health_path == MODEL_HEALTH
    assert v2.meta == {"model": "digits", "version": "2", "grpc_port": str(v2.grpc_port)}
    assert v2.argv[v2.argv.index("--grpc-port") + 1] == str(v2.grpc_port) != str(v2.port)
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
    assert gateway.argv[gateway.argv.index("--grpc-port") + 1] == str(gateway.grpc_port)
    assert gateway.grpc_port not in (0, spec.grpc.gateway_port)  # a free port when the caller picks ports
    assert len({p.port for p in plan}) == len(plan)
    grpc_ports = [p.grpc_port for p in plan if p.grpc_port]
    assert len(grpc_ports) == 5 and len(set(grpc_ports)) == 5 and not set(grpc_ports) & {p.port for p in plan}


def test_grpc_off() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH).model_copy(update={"grpc": Grpc(enabled=False)})
    ports = itertools.count(40000)
    plan = plan_processes(spec, DEFAULT_SPEC_PATH, lambda: next(ports))
    assert all(p.grpc_port == 0 and "--grpc-port" not in p.argv and "grpc_port" not in p.meta for p in plan)


def test_without_gateway_and_default_port() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    ports = itertools.count(40000)
    assert all(
        p.service != "gateway" for p in plan_processes(spec, DEFAULT_SPEC_PATH, lambda: next(ports), with_gateway=False)
    )
    gateway = plan_processes(spec, DEFAULT_SPEC_PATH, lambda: next(ports))[-1]
    assert gateway.port == spec.gateway.port and gateway.grpc_port == spec.grpc.gateway_port


def test_a_port_the_caller_or_the_spec_fixes_is_never_planned_for_another_process() -> None:
    """Seen in a run: `up --gateway-port P` while the port planner, which only checks that a port is
    free now, handed P to a model server's gRPC listener; the gateway bound P first and the replica died."""
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert spec.grpc.enabled  # model servers get gRPC ports too
    handed = iter([18080, 8080, spec.grpc.gateway_port, *range(30000, 30100)])
    plan = plan_processes(spec, DEFAULT_SPEC_PATH, lambda: next(handed), gateway_port=18080)
    gateway = plan[-1]
    others = [p for p in plan if p is not gateway]
    planned = [p.port for p in others] + [p.grpc_port for p in others if p.grpc_port]
    assert 18080 not in planned and gateway.port == 18080
    # without a caller's port: the spec's gateway port and its gRPC port are the fixed ones
    fixed_ports = {spec.gateway.port, spec.grpc.gateway_port}
    plan = plan_processes(spec, DEFAULT_SPEC_PATH, iter([*fixed_ports, *range(31000, 31100)]).__next__)
    assert not {p.port for p in plan[:-1]} & fixed_ports and not {p.grpc_port for p in plan[:-1]} & fixed_ports
    assert (plan[-1].port, plan[-1].grpc_port) == (spec.gateway.port, spec.grpc.gateway_port)
