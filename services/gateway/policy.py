"""The gateway's view of mesh.yaml: an immutable snapshot swapped atomically on reload.

Built once per spec (never per request): API keys resolved from each consumer's env var, rate
limits, pipeline routes, and per model its route (services/common/routing.py: the cumulative weights
of its versions, the override header and the mirror; the version-choice rule the business API shares).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from mesh.spec import MeshSpec, Resilience
from services.common.routing import ModelRoute, build_model_route

log = logging.getLogger(__name__)


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
