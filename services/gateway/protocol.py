"""The Open Inference Protocol's own endpoints at the gateway, and metadata that holds still under a split.

A client such as tritonclient first asks `GET /v2/health/ready` and `GET /v2`: the gateway answers
those itself (ready when every model route has a version with a host in rotation; the model
servers behind it answer their own). Model metadata, readiness and config are routed like infer
only when a version is named (path or override header); unversioned, they go to one fixed version
(the one with the most traffic weight) and the metadata lists every version the route serves, so a
client never sees `versions` flip between calls. Pure functions of the policy snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from services.common.routing import ModelRoute
from services.gateway.policy import Policy

NAME = "meshserve-gateway"
VERSION = "0.1.0"
OWN_PATHS = frozenset({"/v2", "/v2/health/live", "/v2/health/ready"})
METADATA_RESTS = frozenset({"", "ready", "config"})  # path tails whose answer must not depend on the split

# (service name) -> whether it has at least one host in rotation
HasHost = Callable[[ModelRoute, int], bool]


def metadata_version(route: ModelRoute) -> int:
    """The fixed version that answers unversioned metadata: the most weight, the lowest on a tie."""
    if not route.split_versions:
        return min(route.versions)
    weights = dict(zip(route.split_versions, _weights(route.cumulative), strict=True))
    return max(sorted(weights), key=lambda v: weights[v])


def _weights(cumulative: tuple[int, ...]) -> list[int]:
    return [b - a for a, b in zip((0, *cumulative[:-1]), cumulative, strict=True)]


def choose_version(route: ModelRoute, path_version: str | None, header: str | None, rest: str, draw: float) -> int:
    """As ModelRoute.resolve, except that unversioned metadata/ready/config go to `metadata_version`."""
    if path_version is None and header is None and rest in METADATA_RESTS:
        return metadata_version(route)
    return route.resolve(path_version, header, draw)


def is_unversioned_metadata(method: str, rest: str, path_version: str | None, header_given: bool) -> bool:
    """GET /v2/models/<m> with no version in the path or the override header."""
    return method == "GET" and rest == "" and path_version is None and not header_given


def served_versions(policy: Policy, model: str) -> list[int]:
    """The versions of `model` that have replicas in the spec in force."""
    return sorted(v for v, spec in policy.spec.models[model].versions.items() if spec.replicas > 0)


def all_versions_metadata(body: bytes, versions: list[int]) -> bytes:
    """An unversioned model metadata answer with `versions` = every served version."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(doc, dict) or "versions" not in doc:
        return body
    doc["versions"] = [str(v) for v in versions]
    return orjson.dumps(doc)


def own_answer(path: str, policy: Policy, has_host: HasHost) -> tuple[int, bytes]:
    """The gateway's answer to /v2, /v2/health/live and /v2/health/ready (its own view)."""
    if path == "/v2":
        return 200, orjson.dumps({"name": NAME, "version": VERSION, "extensions": ["binary_tensor_data"]})
    if path == "/v2/health/live":
        return 200, b'{"live":true}'
    ready = all(any(has_host(route, v) for v in route.split_versions) for route in policy.models.values())
    return (200 if ready else 503), orjson.dumps({"ready": ready})
