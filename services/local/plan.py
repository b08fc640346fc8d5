"""What the local stack runs, derived from the spec: a pure function from spec (+ ports) to processes.

Service and instance names follow the contracts: `<model>-v<version>` (one `meshserve serve` per
replica), `<pipeline>-<stage>`, `<pipeline>` (business API) and `gateway`; instance = `<service>-<i>`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mesh.spec import MeshSpec
from services.discovery import METRICS_PORT_META

MODEL_HEALTH = "/v2/health/ready"
STAGE_HEALTH = "/ready"
GATEWAY_HEALTH = "/ready"  # on the gateway's status port (services.gateway.status)


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the stack; `argv` runs it, `health_path` on 127.0.0.1:`port` says it is ready."""

    service: str
    instance: str
    argv: tuple[str, ...]
    port: int
    health_path: str
    meta: dict[str, str] = field(default_factory=dict, hash=False)
    env: dict[str, str] = field(default_factory=dict, hash=False)
    discoverable: bool = True  # listed in discovery (everything the mesh routes to)
    health_port: int | None = None  # where `health_path` answers, when not on `port` (the gateway's status port)

    grpc_port: int = 0  # model servers: their v2 gRPC listener (0: none)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port or self.port}{self.health_path}"


def plan_processes(
    spec: MeshSpec,
    spec_path: Path,
    next_port: Callable[[], int],
    *,
    gateway_port: int | None = None,
    with_gateway: bool = True,
    python: str = sys.executable,
) -> list[ProcessSpec]:
    """Every model replica, stage replica, business API replica and the gateway, in start order."""
    repository = spec.repository_path(spec_path.parent)
    # The ports the caller or the spec fixes are never handed to another process: `next_port` checks
    # that a port is free now, and the gateway binds its own only after the model servers started.
    fixed: set[int] = set()
    if with_gateway:
        fixed.add(gateway_port or spec.gateway.port)
        if spec.grpc.enabled and spec.grpc.gateway_port and gateway_port is None:
            fixed.add(spec.grpc.gateway_port)
    given = next_port

    def next_port() -> int:
        while (port := given()) in fixed:
            pass
        return port

    processes: list[ProcessSpec] = []
    for model_name, model in spec.models.items():
        for version, version_spec in model.versions.items():
            service = f"{model_name}-v{version}"
            for i in range(version_spec.replicas):
                port = next_port()
                grpc_port = next_port() if spec.grpc.enabled else 0
                argv = (python, "-m", "services.cli", "serve", "--repository", str(repository))
                argv += (*model.serve_args(model_name, version), "--port", str(port), "--poll-interval", "0")
                argv += tuple(spec.grpc.serve_args(grpc_port))
                meta = {"model": model_name, "version": str(version)}
                if grpc_port:
                    meta["grpc_port"] = str(grpc_port)
                processes.append(
                    ProcessSpec(service, f"{service}-{i}", argv, port, MODEL_HEALTH, meta, grpc_port=grpc_port)
                )
    pipeline_services = [(name, stage.replicas) for name, _, stage in spec.stage_services()]
    pipeline_services += [(name, pipeline.replicas) for name, pipeline in spec.pipelines.items()]
    for service, replicas in pipeline_services:
        for i in range(replicas):
            port = next_port()
            argv = (python, "-m", "services.pipeline", "--service", service, "--spec", str(spec_path))
            processes.append(ProcessSpec(service, f"{service}-{i}", (*argv, "--port", str(port)), port, STAGE_HEALTH))
    if with_gateway:
        port = gateway_port or spec.gateway.port
        status = next_port()
        argv = (python, "-m", "services.gateway", "--spec", str(spec_path), "--port", str(port))
        argv += ("--status-port", str(status))
        meta = {METRICS_PORT_META: str(status)}
        grpc_port = 0
        if spec.grpc.enabled and spec.grpc.gateway_port:
            # a caller that picks the HTTP port (tests) gets a free gRPC port too, never the fixed one
            grpc_port = spec.grpc.gateway_port if gateway_port is None else next_port()
            argv += ("--grpc-port", str(grpc_port))
        processes.append(
            ProcessSpec(
                "gateway", "gateway-0", argv, port, GATEWAY_HEALTH, meta, health_port=status, grpc_port=grpc_port
            )
        )
    return processes
