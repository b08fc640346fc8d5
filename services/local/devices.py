"""Where each local model version really computes, said plainly in `meshserve up` and `meshserve status`.

A laptop or CI machine has no GPU: a `device: gpu` version runs on the CPU here (a cluster pod would
refuse readiness instead: mesh/compile/k8s.py passes --require-device gpu). The truth comes from the
server itself: its model metadata's `parameters.execution_providers` and `device`
(session.get_providers(), services/modelserver/runtime.py).
"""

from __future__ import annotations

from typing import Any

import httpx

UNKNOWN = "?"


def running_on(client: httpx.Client, base_url: str, model: str, version: str) -> dict[str, Any] | None:
    """`{"device": "cpu"|"gpu", "providers": [...]}` from the server's model metadata, None if it does not answer."""
    try:
        reply = client.get(f"{base_url}/v2/models/{model}/versions/{version}")
        params = reply.json().get("parameters", {}) if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not params or "execution_providers" not in params:
        return None
    providers = list(params["execution_providers"])
    return {"device": params.get("device", UNKNOWN), "providers": providers}


def describe(wanted: str, actual: dict[str, Any] | None) -> str:
    """One cell: what the version runs on, and the fallback called out when it is not what the spec asked."""
    if actual is None:
        return UNKNOWN
    providers = ",".join(p.removesuffix("ExecutionProvider") for p in actual["providers"])
    if wanted == "gpu" and actual["device"] != "gpu":
        return f"CPU ({providers}) - spec says gpu, no GPU provider here"
    return f"{actual['device'].upper()} ({providers})"


def fallback_notes(versions: list[tuple[str, str, str, dict[str, Any] | None]]) -> list[str]:
    """Lines for `up`: each (model, version, spec device, what it runs on) whose GPU placement fell back."""
    notes = []
    for model, version, wanted, actual in versions:
        if wanted == "gpu" and actual is not None and actual["device"] != "gpu":
            notes.append(
                f"  NOTE {model} v{version}: the spec places it on a GPU (device: gpu), but no GPU provider loaded "
                f"here, so it runs on the CPU ({', '.join(actual['providers'])}). On a cluster its pod would "
                "refuse readiness instead (unless the version sets cpu_fallback: true)."
            )
    return notes


def spec_devices(spec_path: str) -> dict[tuple[str, str], str]:
    """(model, version) -> the spec's device; empty when the spec cannot be read (status still works)."""
    from mesh.spec import SpecError, load_spec

    try:
        spec = load_spec(spec_path, check_repository=False)
    except (SpecError, OSError):
        return {}
    return {(m, str(v)): vs.device for m, ms in spec.models.items() for v, vs in ms.versions.items()}
