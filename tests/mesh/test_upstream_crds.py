"""Every custom resource `meshserve render` writes for both stacks, held against its CRD's openAPIV3Schema
at the pinned version (../shared/upstream/crds): what the API server would prune or reject is an error.
The walker itself is proven on planted mistakes in every kind the renders contain."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.render import render_objects
from mesh.spec import DEFAULT_SPEC_PATH
from tests.mesh.schemas import is_builtin
from tests.upstream import crd_errors, crd_schemas, is_custom, require_upstream

ROOT = DEFAULT_SPEC_PATH.parents[1]
OWN = ("apiVersion", "kind", "metadata")


@pytest.fixture(scope="module")
def custom_resources() -> dict[str, list[dict[str, Any]]]:
    require_upstream()
    out = {}
    for stack in ("dev", "prod"):
        out[stack] = [o for _, o in render_objects(DEFAULT_SPEC_PATH, stack, ROOT) if not is_builtin(o)]
    return out


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_rendered_custom_resource_is_what_its_crd_accepts(
    stack: str, custom_resources: dict[str, list[dict[str, Any]]]
) -> None:
    objects = custom_resources[stack]
    assert len(objects) >= 25
    problems = [e for o in objects for e in crd_errors(o)]
    assert problems == []


def test_both_stacks_render_every_kind_of_the_platform(custom_resources: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {o["kind"] for objects in custom_resources.values() for o in objects}
    assert kinds == {
        "VirtualService",
        "DestinationRule",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "KongPlugin",
        "KongClusterPlugin",
        "KongConsumer",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
        "Elasticsearch",
        "Kibana",
        "ApmServer",
        "Beat",
    }


def _keys(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of every mapping key below the object's own fields (apiVersion, kind, metadata excluded)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not path and key in OWN:
                continue
            yield (*path, key)
            yield from _keys(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _keys(item, (*path, i))


def _rename(obj: dict[str, Any], path: tuple, new: str) -> dict[str, Any]:
    planted = copy.deepcopy(obj)
    parent = planted
    for step in path[:-1]:
        parent = parent[step]
    parent[new] = parent.pop(path[-1])
    return planted


def _dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def test_a_planted_typo_in_every_kind_is_found_with_the_object_and_the_path(
    custom_resources: dict[str, list[dict[str, Any]]],
) -> None:
    """In each kind, misspell every declared field in turn (doubling its last letter, as a slip of the
    keyboard would): outside free-form (preserve-unknown-fields) maps each one is reported, naming the
    object and the path; inside them nothing could be, which is why the count of caught typos is > 0."""
    first = {}
    for objects in custom_resources.values():
        for o in objects:
            first.setdefault(o["kind"], o)
    for kind, obj in first.items():
        assert crd_errors(obj) == []
        caught = 0
        for path in _keys(obj):
            typo = f"{path[-1]}{path[-1][-1]}"
            errors = crd_errors(_rename(obj, path, typo))
            where = _dotted((*path[:-1], typo))
            who = f"{kind} {obj['metadata'].get('namespace', '_')}/{obj['metadata']['name']}: {where}: unknown field"
            if any(e.startswith(who) for e in errors):
                caught += 1
        assert caught > 0, kind


def _first(custom_resources: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in custom_resources["prod"] if o["kind"] == kind))


def test_wrong_types_enums_patterns_ranges_and_missing_fields_are_found(
    custom_resources: dict[str, list[dict[str, Any]]],
) -> None:
    so = _first(custom_resources, "ScaledObject")
    so["spec"]["minReplicaCount"] = "two"
    assert any(".spec.minReplicaCount: expected integer" in e for e in crd_errors(so))

    pa = _first(custom_resources, "PeerAuthentication")
    pa["spec"]["mtls"]["mode"] = "STRICTLY"
    assert any(".spec.mtls.mode: 'STRICTLY' is not one of" in e for e in crd_errors(pa))

    sm = _first(custom_resources, "ServiceMonitor")
    sm["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert any(".spec.endpoints[0].interval: '15 seconds' does not match the pattern" in e for e in crd_errors(sm))

    dr = _first(custom_resources, "DestinationRule")
    dr["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] = -1
    found = crd_errors(dr)
    assert any(
        ".spec.trafficPolicy.outlierDetection.consecutive5xxErrors: -1 is below the minimum 0" in e for e in found
    )

    plugin = _first(custom_resources, "KongPlugin")
    del plugin["plugin"]
    assert any("required field 'plugin' is missing" in e for e in crd_errors(plugin))

    vs = _first(custom_resources, "VirtualService")
    del vs["spec"]["http"][0]["route"][0]["destination"]["host"]
    assert any(".spec.http[0].route[0].destination: required field 'host' is missing" in e for e in crd_errors(vs))


def test_a_kind_or_version_without_a_crd_upstream_is_an_error() -> None:
    require_upstream()
    assert crd_errors({"apiVersion": "networking.istio.io/v9", "kind": "VirtualService", "metadata": {"name": "x"}})
    assert ("configuration.konghq.com/v1", "KongClusterPlugin") in crd_schemas()
    assert not is_custom({"apiVersion": "v1", "kind": "Service"})


def test_kong_clusterplugin_of_kic_3_0_has_no_config_patches() -> None:
    """Why the tracing plugin uses configFrom: the pinned KIC's CRD has no configPatches (it would be pruned)."""
    require_upstream()
    schema = crd_schemas()[("configuration.konghq.com/v1", "KongClusterPlugin")]
    assert "configFrom" in schema["properties"] and "configPatches" not in schema["properties"]
    planted = {
        "apiVersion": "configuration.konghq.com/v1",
        "kind": "KongClusterPlugin",
        "metadata": {"name": "p"},
        "plugin": "opentelemetry",
        "configPatches": [{"path": "/headers", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    }
    assert crd_errors(planted) == [
        "KongClusterPlugin _/p: .configPatches: unknown field (the CRD does not declare it: the API server prunes it)"
    ]


def test_without_the_upstream_folder_the_tests_skip_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.upstream as upstream

    monkeypatch.setattr(upstream, "UPSTREAM", Path("/nonexistent/shared/upstream"))
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/shared/upstream"):
        upstream.require_upstream()
