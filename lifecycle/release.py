"""Release: take a published version through the automated canary (mesh/canary_analysis.py's `advance`:
weight steps, mirroring, error/latency/top-1 agreement judged in Prometheus) to promotion or rollback,
and write one release report (the publish gates, every canary step's figures, the decision) as
Markdown and JSON.

A version the spec does not list yet is first added to it (one replica, the stable version's device,
weight 0) through the canary module's validated atomic edit. On a cluster `--apply` deploys that at
once and the canary follows; the local supervisor starts servers only when the stack starts, so
locally the command stops there and asks for a restart of `meshserve up` (exit 2), then runs again.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lifecycle import registry
from lifecycle.store import Store
from mesh import canary, canary_analysis


class NotDeployed(RuntimeError):
    """The version was added to the spec but nothing deploys it yet (local stack without --apply)."""


@dataclass
class ReleaseReport:
    model: str
    version: int
    stable: int
    published: dict[str, Any]  # lineage and publish gates from the version's metadata.yaml
    canary: canary_analysis.Report
    decision: str  # promoted | rolled back | rollback not applied


def add_version(doc: Any, model: str, version: int) -> Any:
    """A copy of the spec with `version` under the model's versions: one replica on the stable's device."""
    from ruamel.yaml.comments import CommentedMap

    from mesh.spec import parse_version

    new = copy.deepcopy(doc)
    versions = new["models"][model]["versions"]
    stable = canary.stable_version(doc, model)
    stable_spec = next((s for k, s in versions.items() if parse_version(k) == stable), None) or {}
    entry = CommentedMap({"replicas": 1, "device": stable_spec.get("device", "cpu")})
    if stable_spec.get("device") == "gpu" and "gpus" in stable_spec:
        entry["gpus"] = stable_spec["gpus"]
    entry.fa.set_flow_style()
    versions[version] = entry
    return new


def ensure_in_spec(
    spec_path: Path,
    model: str,
    version: int,
    apply: str | None,
    log: Callable[[str], None],
    apply_timeout_s: float = 600.0,
) -> bool:
    """Add the version to the spec if missing; True if it was added."""
    from mesh.spec import read_yaml

    if version in canary.current_weights(read_yaml(spec_path), model):  # every listed version; CanaryError if unknown
        return False
    diff = canary.apply_to_file(spec_path, lambda d: add_version(d, model, version))
    log(diff.rstrip())
    if apply:
        canary_analysis.run_apply(apply, spec_path, log, apply_timeout_s)
    else:
        raise NotDeployed(
            f"{model} v{version} was added to {spec_path} with one replica and weight 0; the local stack starts "
            "its server when it starts: restart `meshserve up`, then run this command again "
            "(on a cluster pass --apply, which deploys it and goes on)"
        )
    return True


def check_no_other_canary(spec_path: Path, model: str, version: int) -> None:
    """One canary at a time: the analysis compares one canary with the stable version."""
    from mesh.spec import read_yaml

    doc = read_yaml(spec_path)
    stable = canary.stable_version(doc, model)
    others = {v: w for v, w in canary.current_weights(doc, model).items() if w > 0 and v not in (stable, version)}
    if others:
        busy = ", ".join(f"v{v} carries {w}%" for v, w in sorted(others.items()))
        raise ValueError(
            f"{model}: {busy} besides the stable v{stable}; one canary at a time: "
            f"`meshserve canary promote` or `rollback` it first"
        )


def release(
    store: Store,
    spec_path: Path,
    model: str,
    version: int,
    *,
    steps: list[int],
    hold_s: float,
    scrape_interval_s: float,
    prometheus: str,
    limits: canary_analysis.Thresholds,
    agreement: str = "required",
    apply: str | None = None,
    log: Callable[[str], None] = print,
    **advance_options: Any,
) -> ReleaseReport:
    if version not in store.versions(model):
        raise ValueError(f"{model} v{version} is not in {store.uri}: publish it first (meshserve model publish)")
    meta = registry.read_metadata(store, model, version)
    published = registry.summary(meta) | {"gates": (meta.get("evaluation") or {}).get("gates", [])}
    if published["gates_overridden"]:
        log(f"warning: {model} v{version} was published with failed gates (overridden); the canary judges it now")
    check_no_other_canary(spec_path, model, version)
    ensure_in_spec(spec_path, model, version, apply, log, advance_options.get("apply_timeout_s", 600.0))
    report = canary_analysis.advance(
        spec_path,
        model,
        version,
        steps,
        hold_s=hold_s,
        scrape_interval_s=scrape_interval_s,
        prometheus=prometheus,
        limits=limits,
        agreement=agreement,
        apply=apply,
        log=log,
        **advance_options,
    )
    return ReleaseReport(model, version, report.stable, published, report, report.outcome)


def render_markdown(r: ReleaseReport) -> str:
    p = r.published
    produced = (p.get("produced_by") or "-") + (f" ({p['note']})" if p.get("note") else "")
    parent = f"v{p['parent']}" if p.get("parent") else "-"
    lines = [
        f"# Release: {r.model} v{r.version}",
        "",
        f"Decision: **{r.decision}** (stable before the release: v{r.stable}).",
        "",
        "## Published",
        "",
        f"Produced by: {produced}; parent: {parent}; "
        f"published {p.get('published_at') or '-'} by {p.get('published_by') or '-'}.",
        "",
    ]
    if p["gates"]:
        overridden = " (failed gates **overridden** at publish)" if p["gates_overridden"] else ""
        lines += [
            f"Publish gates{overridden}:",
            "",
            "| gate | bound | observed | verdict |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {g['name']} | {g['bound']} | {g['observed']} | {'pass' if g['passed'] else '**FAIL**'} |"
            for g in p["gates"]
        ]
    else:
        lines += ["No publish record (a version built before `meshserve model publish`): no publish gates."]
    lines += ["", "## Canary", ""]
    canary_md = canary_analysis.render_markdown(r.canary).splitlines()
    lines += canary_md[2:]  # its own title is replaced by this report's
    return "\n".join(lines) + "\n"


def write_report(r: ReleaseReport, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = asdict(r)
    for step, obj in zip(data["canary"]["steps"], r.canary.steps, strict=True):
        step["passed"] = obj.passed
    json_path, md_path = directory / "release.json", directory / "release.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(r))
    return json_path, md_path
