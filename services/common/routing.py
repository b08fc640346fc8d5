"""The version-choice rule every router shares: which version of a model answers a request.

The gateway (services/gateway/policy.py) and the business API (services/pipeline/business.py, in its
client traffic mode) both route model calls by it, so a version is chosen one way whoever calls: the
explicit /versions/<v>/ path first, then the override header, then the spec's weighted split. Built once
per spec (never per request); choosing is a pure function of the route and a random draw.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

from mesh.spec import MeshSpec, Resilience, parse_version
from services.common.errors import HTTPError


class RouteError(HTTPError):
    """A request that names no version to route to: unknown version (404), a bad one (400), no weight (503)."""


def model_service(model: str, version: int) -> str:
    """Discovery / Kubernetes Service name of one model version (contracts: `<model>-v<version>`)."""
    return f"{model}-v{version}"


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    versions: frozenset[int]
    split_versions: tuple[int, ...]  # versions with weight > 0
    cumulative: tuple[int, ...]  # running sum of their weights (ends at 100)
    header_name: str  # override header name, lowercase (ASGI header names are)
    mirror_version: int | None
    mirror_fraction: float  # 0..1
    resilience: Resilience
    services: Mapping[int, str]  # version -> service name
    route_labels: Mapping[str, str]  # path rest ("", "infer", "ready") -> bounded metric label

    def weighted(self, draw: float) -> int:
        """The version for a uniform draw in [0, 1)."""
        if not self.split_versions:
            raise RouteError(503, f"model {self.name!r} has no version with traffic weight")
        return self.split_versions[bisect.bisect_right(self.cumulative, draw * self.cumulative[-1])]

    def resolve(self, path_version: str | None, header_value: str | None, draw: float) -> int:
        """Explicit /versions/<v>/ path first, then the override header, then the weighted split."""
        chosen = path_version if path_version is not None else header_value
        if chosen is None:
            return self.weighted(draw)
        try:
            version = parse_version(chosen)
        except ValueError as exc:
            raise RouteError(400, str(exc)) from None
        if version not in self.versions:
            known = ", ".join(f"v{v}" for v in sorted(self.versions))
            raise RouteError(404, f"model {self.name!r} has no version v{version} (known: {known})")
        return version


def build_model_route(name: str, spec: MeshSpec) -> ModelRoute:
    model = spec.models[name]
    weights = model.weights()
    split = tuple(v for v, w in weights.items() if w > 0)
    cumulative, total = [], 0
    for version in split:
        total += weights[version]
        cumulative.append(total)
    traffic = model.traffic
    mirror = traffic.mirror if traffic else None
    return ModelRoute(
        name=name,
        versions=frozenset(model.versions),
        split_versions=split,
        cumulative=tuple(cumulative),
        header_name=(traffic.header if traffic else "x-model-version").lower(),
        mirror_version=mirror.version if mirror and mirror.percentage > 0 else None,
        mirror_fraction=(mirror.percentage / 100.0) if mirror else 0.0,
        resilience=model.resilience,
        services={v: model_service(name, v) for v in model.versions},
        route_labels={rest: f"/v2/models/{name}/{rest}".rstrip("/") for rest in ("", "infer", "ready")},
    )
