"""The gateway's view of mesh.yaml: an immutable snapshot swapped atomically on reload.

Built once per spec (never per request): API keys resolved from each consumer's env var, rate
limits, pipeline routes, and per model the cumulative weights of its versions, the override
header and the mirror. Choosing a version is a pure function of the snapshot and a random draw.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from mesh.spec import MeshSpec, Resilience, parse_version

log = logging.getLogger(__name__)


class RouteError(Exception):
    """A request the gateway cannot route: `status` and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


@dataclass(frozen=True, slots=True)
class PipelineRoute:
    service: str
    resilience: Resilience


@dataclass(frozen=True, slots=True)
class Policy:
    spec: MeshSpec
    keys: Mapping[str, str]  # API key -> consumer username
    limits: Mapping[str, dict[str, int]]  # consumer -> rate-limit windows
    key_names: tuple[str, ...]  # lowercase
    hide_credentials: bool
    pipelines: Mapping[str, PipelineRoute]  # route path -> upstream
    models: Mapping[str, ModelRoute]


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


def resolve_keys(spec: MeshSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """API key -> consumer, each key read from the consumer's env var (never from the spec file)."""
    keys: dict[str, str] = {}
    for consumer in spec.gateway.consumers:
        var = consumer.api_key.env
        value = environ.get(var, "") if var else ""
        if not value:
            log.warning("consumer %s has no API key: env var %s is unset, its requests get 401", consumer.username, var)
            continue
        keys[value] = consumer.username
    return keys


def build_policy(spec: MeshSpec, environ: Mapping[str, str] | None = None) -> Policy:
    environ = os.environ if environ is None else environ
    gateway = spec.gateway
    return Policy(
        spec=spec,
        keys=resolve_keys(spec, environ),
        limits={c.username: gateway.limits_for(c) for c in gateway.consumers},
        key_names=tuple(k.lower() for k in gateway.key_names),
        hide_credentials=gateway.hide_credentials,
        pipelines={p.route: PipelineRoute(name, p.resilience) for name, p in spec.pipelines.items()},
        models={name: build_model_route(name, spec) for name in spec.models},
    )


def split_model_path(path: str) -> tuple[str, str | None, str]:
    """/v2/models/<m>[/versions/<v>][/rest] -> (model, version or None, rest); path starts /v2/models/."""
    parts = path[len("/v2/models/") :].split("/", 3)
    model = parts[0]
    if len(parts) >= 3 and parts[1] == "versions":
        return model, parts[2], "/".join(parts[3:])
    return model, None, "/".join(parts[1:])
