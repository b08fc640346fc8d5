"""The registry view: every version in the repository with its lineage, evaluation, state and weight.

State comes from the spec (mesh.yaml), the one place that says what is released: `stable` (traffic.stable),
`canary` (a weight above 0 that is not the stable version), `serving` (deployed with replicas but no
weight: reachable by the version header), `retired` (in the repository, no longer in the spec and older
than the stable version) and `published` (newer than the stable version, not released yet).
Versions built before the lifecycle existed (models/build.py) have no lifecycle metadata: their
lineage is their build script and their figure the held-out accuracy it recorded.
"""

from __future__ import annotations

from typing import Any

import yaml

from lifecycle.store import METADATA_FILE, Store


def read_metadata(store: Store, model: str, version: int) -> dict[str, Any]:
    try:
        data = yaml.safe_load(store.read(f"{model}/{version}/{METADATA_FILE}"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def summary(meta: dict[str, Any]) -> dict[str, Any]:
    """Lineage and evaluation of one version's metadata, whichever tool wrote it."""
    evaluation = meta.get("evaluation") or {}
    produced = meta.get("produced_by") or {}
    if evaluation:
        return {
            "parent": meta.get("parent"),
            "produced_by": produced.get("how", "publish"),
            "note": produced.get("note", ""),
            "metric": evaluation.get("metric"),
            "value": evaluation.get("value"),
            "agreement_with_stable": evaluation.get("agreement_with_stable"),
            "compared_with": evaluation.get("stable_version"),
            "gates_passed": evaluation.get("passed"),
            "gates_overridden": evaluation.get("overridden", False),
            "sha256": meta.get("sha256"),
            "latency_b1_ms": ((meta.get("performance") or {}).get("candidate") or {}).get("latency_b1_ms"),
            "published_at": (meta.get("published") or {}).get("at"),
            "published_by": (meta.get("published") or {}).get("by"),
        }
    held_out = meta.get("held_out") or {}
    return {
        "parent": None,
        "produced_by": meta.get("built_by", "unknown"),
        "note": meta.get("description", ""),
        "metric": "accuracy" if held_out else None,
        "value": held_out.get("accuracy"),
        "agreement_with_stable": None,
        "compared_with": None,
        "gates_passed": None,
        "gates_overridden": False,
        "sha256": meta.get("sha256"),
        "latency_b1_ms": None,
        "published_at": None,
        "published_by": None,
    }


def states(versions: list[int], spec_model: dict[str, Any] | None) -> dict[int, tuple[str, int]]:
    """(state, weight) per version, from the model's section of the spec (None: not in the spec)."""
    from mesh.spec import parse_version

    if not spec_model:
        return {v: ("published", 0) for v in versions}
    declared = {parse_version(k): (v or {}) for k, v in (spec_model.get("versions") or {}).items()}
    traffic = spec_model.get("traffic") or {}
    weights = {parse_version(k): int(w) for k, w in (traffic.get("weights") or {}).items()}
    served = [v for v, s in declared.items() if int(s.get("replicas", 1)) > 0]
    stable = min(served, default=None)
    if traffic.get("stable") is not None:
        stable = parse_version(traffic["stable"])
    if not weights and stable is not None:
        weights = {stable: 100}
    out = {}
    for version in sorted(set(versions) | set(declared)):
        weight = weights.get(version, 0)
        if version == stable:
            state = "stable"
        elif weight > 0:
            state = "canary"
        elif version in served:
            state = "serving"
        elif stable is not None and version > stable:
            state = "published"
        else:
            state = "retired"
        out[version] = (state, weight)
    return out


def rows(store: Store, model: str, spec_model: dict[str, Any] | None) -> list[dict[str, Any]]:
    versions = store.versions(model)
    table = []
    for version, (state, weight) in states(versions, spec_model).items():
        row = {"version": version, "state": state, "weight": weight, "in_repository": version in versions}
        table.append(row | summary(read_metadata(store, model, version) if version in versions else {}))
    return table


def render_table(model: str, table: list[dict[str, Any]]) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    head = ["version", "state", "weight", "parent", "produced by", "metric", "value", "agree(stable)", "gates"]
    lines = [f"{model}:", "  " + " | ".join(head)]
    for r in table:
        gates = {True: "passed", False: "FAILED", None: "-"}[r["gates_passed"]]
        if r["gates_overridden"]:
            gates = "overridden"
        cells = [
            f"v{r['version']}",
            r["state"] + ("" if r["in_repository"] else " (missing!)"),
            f"{r['weight']}%",
            fmt(r["parent"] and f"v{r['parent']}"),
            fmt(r["produced_by"]),
            fmt(r["metric"]),
            fmt(r["value"]),
            fmt(r["agreement_with_stable"]),
            gates,
        ]
        lines.append("  " + " | ".join(cells))
    return "\n".join(lines)
