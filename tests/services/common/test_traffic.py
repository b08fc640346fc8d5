"""services/common/traffic.py: the mode setting, the single-try policy behind a sidecar, and the contract
with the Kubernetes compiler (the env it writes selects mesh mode; Istio, not the client, retries; the
header the business API forwards is one the VirtualService matches)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mesh.compile import istio, k8s
from mesh.compile.names import workloads
from mesh.compile.settings import Environment, Platform
from mesh.spec import load_spec, validate_spec
from services.common.client import NoEvents, Upstream
from services.common.routing import RouteError
from services.common.traffic import CLIENT, MESH, TrafficSettings, single_try
from services.pipeline.business import choose_model_call, make_plan

SPEC = load_spec()
POD_SPEC = validate_spec(k8s.pod_spec_document(SPEC))


def test_default_is_client_mode() -> None:
    assert TrafficSettings.from_env({}) == TrafficSettings(CLIENT, "x-model-version")
    assert not TrafficSettings.from_env({}).mesh


def test_mesh_mode_and_header_name_from_the_environment() -> None:
    settings = TrafficSettings.from_env({"MESHSERVE_TRAFFIC": " Mesh ", "MESHSERVE_VERSION_HEADER": "X-Canary"})
    assert settings == TrafficSettings(MESH, "x-canary")
    assert settings.mesh


def test_an_unknown_mode_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"MESHSERVE_TRAFFIC='istio': use 'client' .* or 'mesh'"):
        TrafficSettings.from_env({"MESHSERVE_TRAFFIC": "istio"})


def test_single_try_turns_off_the_clients_retries_and_ejection_only() -> None:
    spec = SPEC.models["digits"].resilience
    assert spec.retries.attempts == 2 and spec.outlier_detection.consecutive_5xx_errors == 3
    once = single_try(spec)
    assert once.timeout == spec.timeout
    assert once.connection_pool == spec.connection_pool
    upstream = Upstream("digits", once, NoEvents())  # what the shared client makes of it
    assert upstream.attempts == 1
    assert upstream.pool.policy.consecutive_5xx_errors == 0  # the one Service host is never ejected


def compiled_env(name: str, spec: Any = SPEC, env: Environment | None = None) -> dict[str, Any]:
    """A compiled Deployment's container env: plain values (secret references as their valueFrom)."""
    objects = k8s.compile_core(spec, env or Environment())
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(("istio_on", "mode"), [(True, MESH), (False, CLIENT)])
def test_the_compiled_pod_env_selects_the_mode(istio_on: bool, mode: str) -> None:
    env = Environment(platform=Platform(istio=istio_on))
    settings = TrafficSettings.from_env(compiled_env("digits-classify", env=env))
    assert settings == TrafficSettings(mode, "x-model-version")


def test_the_compiled_header_name_follows_the_spec(spec_with_header: Any) -> None:
    settings = TrafficSettings.from_env(compiled_env("digits-classify", spec_with_header))
    assert settings == TrafficSettings(MESH, "x-canary")
    vs = istio.model_virtual_service("digits", spec_with_header, Environment())
    assert vs["spec"]["http"][0]["match"] == [{"headers": {"X-Canary": {"regex": "^v?1$"}}}]


@pytest.fixture
def spec_with_header() -> Any:
    doc = SPEC.model_dump(mode="json")
    doc["models"]["digits"]["traffic"]["header"] = "X-Canary"
    return validate_spec(doc)


def test_one_retry_layer_on_the_cluster() -> None:
    """Istio's VirtualService retries with the spec's numbers; the business API in mesh mode does not."""
    plan = make_plan(POD_SPEC, "digits-classify", TrafficSettings(MESH))
    assert plan.model_resilience.retries.attempts == 0
    assert plan.stage_resilience.retries.attempts == 0
    vs = istio.model_virtual_service("digits", SPEC, Environment())
    assert {r["retries"]["attempts"] for r in vs["spec"]["http"]} == {SPEC.models["digits"].resilience.retries.attempts}
    stage = next(w for w in workloads(SPEC, Environment()) if w.name == "digits-classify-preprocess")
    stage_retries = istio.service_virtual_service(stage, SPEC, Environment())["spec"]["http"][0]["retries"]
    assert stage_retries["attempts"] == SPEC.pipelines["digits-classify"].resilience.retries.attempts
    local = make_plan(SPEC, "digits-classify", TrafficSettings(CLIENT))
    assert local.model_resilience is SPEC.models["digits"].resilience  # locally the client is the layer


@pytest.mark.parametrize("value", ["1", "v2", "V2", " 2 "])
def test_the_forwarded_override_is_one_the_virtual_service_matches(value: str) -> None:
    plan = make_plan(POD_SPEC, "digits-classify", TrafficSettings(MESH))
    call = choose_model_call(plan, TrafficSettings(MESH), {"x-model-version": value})
    assert (call.service, call.base_path, call.version) == ("digits", "/v2/models/digits", None)
    routes = istio.model_virtual_service("digits", SPEC, Environment())["spec"]["http"]
    forwarded = call.headers["x-model-version"]
    matched = [
        r["name"]
        for r in routes
        if "match" in r and re.search(r["match"][0]["headers"]["x-model-version"]["regex"], forwarded)
    ]
    assert matched == [f"header-v{value.strip().lower().removeprefix('v')}"]


def test_no_override_lets_istio_split() -> None:
    plan = make_plan(POD_SPEC, "digits-classify", TrafficSettings(MESH))
    call = choose_model_call(plan, TrafficSettings(MESH), {})
    assert (call.service, call.headers, call.version) == ("digits", {}, None)
    assert call.service in k8s.discovery_document(SPEC, Environment())["services"]


@pytest.mark.parametrize(("value", "status"), [("v9", 404), ("latest", 400)])
def test_a_bad_override_is_refused_in_both_modes(value: str, status: int) -> None:
    for mode, spec in ((MESH, POD_SPEC), (CLIENT, SPEC)):
        plan = make_plan(spec, "digits-classify", TrafficSettings(mode))
        with pytest.raises(RouteError) as caught:
            choose_model_call(plan, TrafficSettings(mode), {"x-model-version": value})
        assert caught.value.status == status


def test_client_mode_is_unchanged() -> None:
    plan = make_plan(SPEC, "digits-classify", TrafficSettings(CLIENT))
    call = choose_model_call(plan, TrafficSettings(CLIENT), {"x-model-version": "v2"})
    assert (call.service, call.base_path, call.headers, call.version) == (
        "digits-v2",
        "/v2/models/digits/versions/2",
        {},
        2,
    )


def test_pipeline_may_call_the_model_host_service() -> None:
    """The model's AuthorizationPolicy selects exactly the pods behind the plain `<model>` Service and lets
    the business API's identity in on any path (mesh mode calls /v2/models/<model> and .../infer)."""
    env = Environment()
    core = k8s.compile_core(SPEC, env)
    host = next(o for o in core if o["kind"] == "Service" and o["metadata"]["name"] == "digits")
    api = next(o for o in core if o["kind"] == "Deployment" and o["metadata"]["name"] == "digits-classify")
    identity = istio.principal("meshserve", api["spec"]["template"]["spec"]["serviceAccountName"])
    policy = next(o for o in istio.authorization_policies(SPEC, env) if o["metadata"]["name"] == "digits")
    assert policy["spec"]["selector"]["matchLabels"] == host["spec"]["selector"]
    rules = policy["spec"]["rules"]
    assert any(identity in f["source"]["principals"] and "to" not in rule for rule in rules for f in rule["from"])
