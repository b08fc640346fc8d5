"""Who splits a model's traffic between its versions: the business API itself, or the service mesh.

One setting, read once at start-up from the environment (`TrafficSettings.from_env()`):

`MESHSERVE_TRAFFIC=client` (the default; the local stack, which has no Istio): the business API picks
the version with the shared rule (services/common/routing.py: the override header, else the spec's
weights), calls `<model>-v<N>` at /v2/models/<model>/versions/<N>/infer, and the shared client
retries and ejects outliers by the spec's resilience policy.

`MESHSERVE_TRAFFIC=mesh` (Kubernetes with Istio; mesh/compile/k8s.py sets it): the pods' copy of the
spec has no `traffic` block, because the split lives only in the VirtualService of the host
`<model>`. So the business API calls the plain `<model>` Service at /v2/models/<model>/infer (no
version in the path), forwards the caller's override header (checked first, so a bad value is the
same 400/404 as locally; sent as a bare number, which the VirtualService's `^v?N$` match takes), and
reports the version named by the answer's `x-model-version`. Retries and outlier ejection are the
sidecar's (VirtualService `retries`, DestinationRule `outlierDetection`, compiled from the same
spec numbers): the client makes a single try per call (`single_try`), so no request is retried by
two layers and the one Service host is never ejected by the client.
`MESHSERVE_VERSION_HEADER` names the override header the VirtualService matches (the spec's
`traffic.header`, which the pods' spec copy no longer carries); default `x-model-version`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from mesh.spec import OutlierDetection, Resilience, Retries

TRAFFIC_ENV = "MESHSERVE_TRAFFIC"
VERSION_HEADER_ENV = "MESHSERVE_VERSION_HEADER"
CLIENT: Literal["client"] = "client"
MESH: Literal["mesh"] = "mesh"
DEFAULT_VERSION_HEADER = "x-model-version"


@dataclass(frozen=True, slots=True)
class TrafficSettings:
    mode: Literal["client", "mesh"] = CLIENT
    version_header: str = DEFAULT_VERSION_HEADER  # lowercase; used in mesh mode

    @property
    def mesh(self) -> bool:
        return self.mode == MESH

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrafficSettings:
        env = os.environ if env is None else env
        mode = env.get(TRAFFIC_ENV, "").strip().lower() or CLIENT
        if mode not in (CLIENT, MESH):
            raise ValueError(
                f"{TRAFFIC_ENV}={env[TRAFFIC_ENV]!r}: use {CLIENT!r} (the business API splits traffic, local stack) "
                f"or {MESH!r} (Istio splits it)"
            )
        header = env.get(VERSION_HEADER_ENV, "").strip().lower() or DEFAULT_VERSION_HEADER
        return cls(mode, header)  # type: ignore[arg-type]


def single_try(resilience: Resilience) -> Resilience:
    """The policy for a call through the sidecar: no retries and no ejection of the client's own (Istio
    does both once); the overall timeout and the connection-pool bounds (this process's queue) stay."""
    return resilience.model_copy(
        update={"retries": Retries(attempts=0), "outlier_detection": OutlierDetection(consecutive_5xx_errors=0)}
    )
