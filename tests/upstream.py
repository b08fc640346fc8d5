"""Hold generated objects against what a real cluster will accept, offline: the upstream CRDs and chart
defaults at the versions infra/charts.py pins, read from ../shared/upstream/ (beside the clone; never
copied into it). In a clone without that folder the tests that need it skip, naming the folder.

`crd_errors(obj)` walks a custom resource against its CRD's `openAPIV3Schema` the way the API server
prunes and validates it: a field the schema does not declare (outside
`x-kubernetes-preserve-unknown-fields`), a wrong type, a value outside an enum, pattern, length or
range, or a missing required field is an error naming the object and the path. CEL rules
(`x-kubernetes-validations`) and `format` are not evaluated.

`values_errors(chart, values)` says which Helm values paths a chart's defaults do not have (free-form
maps excepted): none of the pinned charts ships a values.schema.json, so Helm would ignore them.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

UPSTREAM = Path(__file__).resolve().parents[1] / ".." / "shared" / "upstream"

# apiVersion group -> the CRD file that defines it (../shared/upstream/README.md says where each comes from).
CRD_FILES = ("istio.yaml", "kong.yaml", "prom-servicemonitors.yaml", "prom-prometheusrules.yaml", "keda-so.yaml")
CRD_FILES += ("eck.yaml",)

# Maps a chart passes through to another API (istiod's meshConfig is Istio's MeshConfig): their keys are
# that API's, not the chart's, so only their leaves' values are compared with the chart's defaults.
PASS_THROUGH = frozenset({"meshConfig"})

# Helm release (as infra/ names it) -> chart-values file; subcharts: values prefix -> their own file.
CHART_VALUES = {
    "istio-base": "istio-base.yaml",
    "istiod": "istiod.yaml",
    "kong": "ingress.yaml",
    "kps": "kps.yaml",
    "nvidia-device-plugin": "ndp.yaml",
    "dcgm-exporter": "dcgm.yaml",
    "cluster-autoscaler": "ca.yaml",
}
SUBCHARTS = {"kong": {"controller": "kong.yaml", "gateway": "kong.yaml"}, "kps": {"grafana": "grafana.yaml"}}
# Releases installed with no values at all (no chart defaults needed to check them).
NO_VALUES = ("keda", "eck-operator")
# Maps whose keys are the user's, not the chart's: anything below them is free-form.
FREE_FORM = frozenset(
    {
        "podAnnotations",
        "podLabels",
        "annotations",
        "labels",
        "nodeSelector",
        "tolerations",
        "affinity",
        "env",
        "extraArgs",
        "extraEnv",
        "resources",
        "securityContext",
        "podSecurityContext",
    }
)


def require_upstream() -> Path:
    """The upstream folder, or skip the calling test with the folder's name."""
    if not UPSTREAM.is_dir():
        pytest.skip(f"upstream reference data not found: {UPSTREAM.resolve()} (shared/ beside the clone)")
    return UPSTREAM


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """YAML documents of a file; Helm-templated CRD files (KEDA's chart) lose their template lines."""
    text = path.read_text()
    text = re.sub(r"(?m)^\s*\{\{.*\}\}\s*$\n?", "", text)
    text = re.sub(r"\{\{.*?\}\}", "templated", text)
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version in ../shared/upstream/crds/."""
    root = require_upstream() / "crds"
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for name in CRD_FILES:
        for doc in _load_yaml_documents(root / name):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    out[key] = version["schema"]["openAPIV3Schema"]
    return out


@functools.cache
def chart_defaults(file: str) -> dict[str, Any]:
    document = yaml.safe_load((require_upstream() / "chart-values" / file).read_text()) or {}
    if "_internal_defaults_do_not_set" in document:  # istio's charts keep their defaults under this key
        document = {**document, **document["_internal_defaults_do_not_set"]}
    return document


# --------------------------------------------------------------------------- CRD walker


def _type_ok(value: Any, wanted: str, lenient_numbers: bool) -> bool:
    if wanted == "object":
        return isinstance(value, dict)
    if wanted == "array":
        return isinstance(value, list)
    if wanted == "string":
        return isinstance(value, str)
    if wanted == "boolean":
        return isinstance(value, bool)
    if wanted == "integer":
        if isinstance(value, bool):
            return False
        # Pulumi's mocks hand numbers over as floats (2.0); the engine sends integers to the API server.
        return isinstance(value, int) or (lenient_numbers and isinstance(value, float) and value.is_integer())
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _walk(value: Any, schema: dict[str, Any], path: str, lenient: bool, structural: bool) -> list[str]:
    """Errors of `value` under `schema`; `structural` is False inside anyOf/oneOf/allOf/not branches,
    which may only constrain values (they cannot declare fields, so they prune nothing)."""
    errors: list[str] = []
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null is not allowed"]
    if schema.get("x-kubernetes-int-or-string"):
        integral = isinstance(value, int) or (lenient and isinstance(value, float) and value.is_integer())
        if not ((integral or isinstance(value, str)) and not isinstance(value, bool)):
            errors.append(f"{path}: expected an integer or a string, got {type(value).__name__} {value!r}")
        wanted = None
    else:
        wanted = schema.get("type")
    if wanted and not _type_ok(value, wanted, lenient):
        return [f"{path}: expected {wanted}, got {type(value).__name__} {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match the pattern {schema['pattern']!r}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and (
            value < schema["minimum"] or (schema.get("exclusiveMinimum") is True and value == schema["minimum"])
        ):
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and (
            value > schema["maximum"] or (schema.get("exclusiveMaximum") is True and value == schema["maximum"])
        ):
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        errors += [
            f"{path}: required field {name!r} is missing" for name in schema.get("required", ()) if name not in value
        ]
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(f"{path}: more than {schema['maxProperties']} fields")
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errors.append(f"{path}: fewer than {schema['minProperties']} fields")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in props:
                errors += _walk(item, props[key], where, lenient, structural)
            elif isinstance(extra, dict):
                errors += _walk(item, extra, where, lenient, structural)
            elif extra is True or preserve or not structural or (embedded and key in OWN_FIELDS):
                continue
            else:
                errors.append(f"{where}: unknown field (the CRD does not declare it: the API server prunes it)")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors += _walk(item, schema["items"], f"{path}[{i}]", lenient, structural)
    for sub in schema.get("allOf", ()):
        errors += _walk(value, sub, path, lenient, False)
    if "anyOf" in schema and not any(not _walk(value, s, path, lenient, False) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of the schema's anyOf alternatives")
    if "oneOf" in schema:
        matching = sum(1 for s in schema["oneOf"] if not _walk(value, s, path, lenient, False))
        if matching != 1:
            errors.append(f"{path}: matches {matching} of the schema's oneOf alternatives, not exactly one")
    if "not" in schema and not _walk(value, schema["not"], path, lenient, False):
        errors.append(f"{path}: matches a combination the schema forbids (not: {schema['not']})")
    return errors


OWN_FIELDS = ("apiVersion", "kind", "metadata")  # the API server's own: never pruned, validated apart


def crd_errors(obj: dict[str, Any], *, lenient_numbers: bool = False) -> list[str]:
    """Every problem of one custom resource against its CRD, each prefixed by `Kind namespace/name`.
    An (apiVersion, kind) with no CRD in ../shared/upstream/ is itself an error."""
    meta = obj.get("metadata") or {}
    who = f"{obj.get('kind')} {meta.get('namespace', '_')}/{meta.get('name')}"
    schema = crd_schemas().get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is None:
        return [f"{who}: no served CRD version {obj.get('apiVersion')} for kind {obj.get('kind')} upstream"]
    body = {k: v for k, v in obj.items() if k not in OWN_FIELDS}
    top = {**schema, "properties": {k: v for k, v in schema.get("properties", {}).items() if k not in OWN_FIELDS}}
    return [f"{who}: {e}" for e in _walk(body, top, "", lenient_numbers, True)]


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in crd_schemas()


# --------------------------------------------------------------------------- Helm values


def _paths(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, leaf value) of every leaf; free-form maps count as one leaf."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value and key not in FREE_FORM:
            out += _paths(value, path)
        else:
            out.append((path, value))
    return out


def _lookup(defaults: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    node = defaults
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _defaults_for(release: str, path: tuple[str, ...]) -> list[tuple[Any, tuple[str, ...]]]:
    """Where a values path may be declared: the chart's own defaults, and its subchart's for a subchart key."""
    places = [(chart_defaults(CHART_VALUES[release]), path)]
    sub = SUBCHARTS.get(release, {}).get(path[0])
    if sub is not None:
        places.append((chart_defaults(sub), path[1:]))
    return places


def values_errors(release: str, values: dict[str, Any]) -> list[str]:
    """Values paths the chart (or its subchart) does not declare; a free-form map's inside is the user's."""
    errors = []
    for path, _ in _paths(values):
        if any(key in PASS_THROUGH for key in path[:-1]):
            continue
        # A path is known once a prefix of it reaches a free-form map or a declared leaf/map.
        if not any(_lookup(d, p)[0] for d, p in _defaults_for(release, path)):
            errors.append(f"{release}: values path {'.'.join(path)} is not in the chart's defaults")
    return errors


def values_repeating_defaults(release: str, values: dict[str, Any]) -> list[str]:
    """Values paths set to exactly what the chart already defaults to (the effective default: a subchart's
    value as the parent chart overrides it)."""
    out = []
    for path, value in _paths(values):
        found = [_lookup(d, p) for d, p in reversed(_defaults_for(release, path))]
        known = [v for ok, v in found if ok]
        if known and known[-1] == value:  # the parent chart's value wins over the subchart's own
            out.append(f"{release}: {'.'.join(path)} = {value!r} is the chart's default")
    return out
