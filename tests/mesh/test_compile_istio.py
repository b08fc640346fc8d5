"""mesh/compile/istio.py: objects validate against Istio's published models (unknown fields rejected),
and every number in the VirtualServices and DestinationRules equals the spec's, field by field (the
same numbers the local gateway enforces)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.compile import istio
from mesh.compile.names import GRPC_EDGE_METHODS
from mesh.compile.settings import Environment
from mesh.spec import DEFAULT_SPEC_PATH, MeshSpec, Resilience, load_spec, parse_duration, read_yaml, validate_spec
from tests.mesh.schemas import validate_custom

SPEC = load_spec()
ENV = Environment()
NS = "meshserve"


def objects(spec: MeshSpec = SPEC) -> list[dict[str, Any]]:
    return istio.compile_istio(spec, ENV)


def find(kind: str, name: str, objs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return next(o for o in (objs or objects()) if o["kind"] == kind and o["metadata"]["name"] == name)


# Istio's duration fields (networking v1) and the string form its validation accepts.
DURATION_KEYS = frozenset(
    {
        "timeout",
        "perTryTimeout",
        "interval",
        "baseEjectionTime",
        "connectTimeout",
        "idleTimeout",
        "maxConnectionDuration",
    }
)
ISTIO_DURATION = re.compile(r"^\d+(\.\d+)?(h|m|s|ms|us)$")


def durations_in(obj: Any) -> list[str]:
    """Every value under a duration key, anywhere in a rendered object."""
    if isinstance(obj, dict):
        found = [v for k, v in obj.items() if k in DURATION_KEYS]
        return found + [d for k, v in obj.items() if k not in DURATION_KEYS for d in durations_in(v)]
    if isinstance(obj, list):
        return [d for v in obj for d in durations_in(v)]
    return []


def assert_istio_durations(objs: list[dict[str, Any]]) -> int:
    found = [d for o in objs for d in durations_in(o)]
    for d in found:
        assert isinstance(d, str) and ISTIO_DURATION.match(d), f"not an Istio duration: {d!r}"
    return len(found)


def test_every_rendered_duration_is_an_istio_duration_string() -> None:
    routing = [o for o in objects() if o["kind"] in ("VirtualService", "DestinationRule")]
    assert assert_istio_durations(routing) >= 10  # timeouts, per-try timeouts, intervals, ejection times
    with pytest.raises(AssertionError):
        assert_istio_durations([{"spec": {"http": [{"timeout": "1.5 s"}]}}])
    with pytest.raises(AssertionError):
        assert_istio_durations([{"spec": {"trafficPolicy": {"outlierDetection": {"interval": 10}}}}])


def test_every_object_validates_against_the_istio_models() -> None:
    for obj in objects():
        validate_custom(obj)


def test_a_misspelled_field_is_caught() -> None:
    vs = copy.deepcopy(find("VirtualService", "digits"))
    vs["spec"]["http"][-1]["retries"]["perTryTimout"] = "1s"
    with pytest.raises(pydantic.ValidationError, match="perTryTimout"):
        validate_custom(vs)


def ms(seconds: float) -> float:
    """Durations compare in milliseconds: 9 x 0.001 is not exactly 0.009 in binary floating point."""
    return round(seconds * 1000, 3)


def grpc_equivalents(retry_on: list[str]) -> list[str]:
    """A gRPC error is HTTP 200 + grpc-status: a 503-class HTTP condition needs Envoy's `unavailable` too."""
    if "unavailable" in retry_on or not {"5xx", "gateway-error"} & set(retry_on):
        return []
    return ["unavailable"]


def assert_route_parity(route: dict[str, Any], resilience: Resilience, grpc: bool = False) -> None:
    assert ms(parse_duration(route["timeout"])) == ms(resilience.timeout)
    retries = route["retries"]
    assert retries["attempts"] == resilience.retries.attempts
    if resilience.retries.attempts:
        extra = grpc_equivalents(resilience.retries.retry_on) if grpc else []
        assert retries["retryOn"].split(",") == [*resilience.retries.retry_on, *extra]
        if resilience.retries.per_try_timeout is None:
            assert "perTryTimeout" not in retries
        else:
            assert ms(parse_duration(retries["perTryTimeout"])) == ms(resilience.retries.per_try_timeout)


def assert_policy_parity(policy: dict[str, Any], resilience: Resilience, grpc: bool = False) -> None:
    pool, outlier = resilience.connection_pool, resilience.outlier_detection
    assert policy["connectionPool"]["tcp"]["maxConnections"] == pool.max_connections
    assert policy["connectionPool"]["http"]["http1MaxPendingRequests"] == pool.max_pending_requests
    # gRPC multiplexes: active requests capped at what HTTP/1.1 could have in flight (one per connection)
    assert policy["connectionPool"]["http"].get("http2MaxRequests") == (pool.max_connections if grpc else None)
    detection = policy["outlierDetection"]
    assert detection["consecutive5xxErrors"] == outlier.consecutive_5xx_errors
    assert ms(parse_duration(detection["interval"])) == ms(outlier.interval)
    assert ms(parse_duration(detection["baseEjectionTime"])) == ms(outlier.base_ejection_time)
    assert detection["maxEjectionPercent"] == outlier.max_ejection_percent


@pytest.mark.parametrize("model", sorted(SPEC.models))
def test_model_virtual_service_parity(model: str) -> None:
    mspec = SPEC.models[model]
    vs = find("VirtualService", model)["spec"]
    host = f"{model}.{NS}.svc.cluster.local"
    # Kong's gRPC Service for this model gets the same routes (mesh/compile/k8s.py: model_grpc_service)
    assert vs["hosts"] == [host, f"{model}-grpc.{NS}.svc.cluster.local"]
    *header_routes, split = vs["http"]
    weights = {int(d["destination"]["subset"][1:]): d["weight"] for d in split["route"]}
    assert weights == mspec.weights()
    assert all(0 <= w <= 100 for w in weights.values()) and sum(weights.values()) == 100
    assert all(d["destination"]["host"] == host for d in split["route"])
    served = {v for v, s in mspec.versions.items() if s.replicas > 0}
    header = mspec.traffic.header if mspec.traffic else "x-model-version"
    assert {int(r["route"][0]["destination"]["subset"][1:]) for r in header_routes} == served
    for route in header_routes:
        version = route["route"][0]["destination"]["subset"][1:]
        assert route["match"] == [{"headers": {header: {"regex": f"^v?{version}$"}}}]
    for route in vs["http"]:
        assert_route_parity(route, mspec.resilience, grpc=True)
        # no port match: every route covers the HTTP port and the gRPC (HTTP/2) port alike, so the split,
        # the x-model-version override (gRPC metadata are HTTP/2 headers) and the retries apply to both
        assert all("port" not in m for m in route.get("match", []))
    mirror = mspec.traffic.mirror if mspec.traffic else None
    if mirror is None or mirror.percentage == 0:
        assert "mirror" not in split and "mirrorPercentage" not in split
    else:
        assert split["mirror"] == {"host": host, "subset": f"v{mirror.version}"}
        assert split["mirrorPercentage"] == {"value": mirror.percentage}


@pytest.mark.parametrize("model", sorted(SPEC.models))
def test_model_destination_rule_parity(model: str) -> None:
    mspec = SPEC.models[model]
    dr = find("DestinationRule", model)["spec"]
    assert dr["host"] == f"{model}.{NS}.svc.cluster.local"
    assert dr["subsets"] == [{"name": f"v{v}", "labels": {"version": f"v{v}"}} for v in sorted(mspec.versions)]
    assert_policy_parity(dr["trafficPolicy"], mspec.resilience, grpc=True)


def test_the_demo_numbers_literally() -> None:
    """The parity helpers compare against the spec object; this pins the demo file's own numbers."""
    split = find("VirtualService", "digits")["spec"]["http"][-1]
    assert [d["weight"] for d in split["route"]] == [90, 10]
    assert split["timeout"] == "2s"
    assert split["retries"] == {
        "attempts": 2,
        "perTryTimeout": "500ms",
        "retryOn": "connect-failure,refused-stream,5xx,unavailable",
    }
    policy = find("DestinationRule", "digits")["spec"]["trafficPolicy"]
    assert policy["outlierDetection"] == {
        "consecutive5xxErrors": 3,
        "interval": "1s",
        "baseEjectionTime": "5s",
        "maxEjectionPercent": 50,
        "minHealthPercent": 1,  # no host in rotation -> all hosts (Envoy's panic), as the local client does
    }
    assert policy["connectionPool"] == {
        "tcp": {"maxConnections": 64},
        "http": {"http1MaxPendingRequests": 128, "http2MaxRequests": 64},
    }


def test_mirror_is_compiled_when_its_percentage_is_set() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["models"]["digits"]["traffic"]["mirror"]["percentage"] = 12.5
    split = find("VirtualService", "digits", objects(validate_spec(doc)))["spec"]["http"][-1]
    assert split["mirror"] == {"host": "digits.meshserve.svc.cluster.local", "subset": "v2"}
    assert split["mirrorPercentage"] == {"value": 12.5}


def test_pipeline_services_get_the_pipeline_resilience() -> None:
    resilience = SPEC.pipelines["digits-classify"].resilience
    for name in ("digits-classify", "digits-classify-preprocess", "digits-classify-postprocess"):
        (route,) = find("VirtualService", name)["spec"]["http"]
        assert route["route"] == [{"destination": {"host": f"{name}.{NS}.svc.cluster.local"}}]
        assert_route_parity(route, resilience)
        assert_policy_parity(find("DestinationRule", name)["spec"]["trafficPolicy"], resilience)


durations = st.integers(min_value=1, max_value=600_000).map(lambda ms: ms / 1000)


@given(
    timeout=durations,
    per_try=st.one_of(st.none(), durations),
    attempts=st.integers(0, 10),
    errors=st.integers(0, 100),
    interval=durations,
    ejection=durations,
    percent=st.integers(0, 100),
    connections=st.integers(1, 100_000),
    pending=st.integers(1, 100_000),
)
def test_parity_holds_for_any_resilience(
    timeout, per_try, attempts, errors, interval, ejection, percent, connections, pending
):
    if per_try is not None and per_try > timeout:
        per_try = timeout
    resilience = Resilience.model_validate(
        {
            "timeout": timeout,
            "retries": {"attempts": attempts, "per_try_timeout": per_try},
            "outlier_detection": {
                "consecutive_5xx_errors": errors,
                "interval": interval,
                "base_ejection_time": ejection,
                "max_ejection_percent": percent,
            },
            "connection_pool": {"max_connections": connections, "max_pending_requests": pending},
        }
    )
    assert_route_parity(istio.route_policy(resilience), resilience)
    assert_policy_parity(istio.traffic_policy(resilience), resilience)
    assert assert_istio_durations([istio.route_policy(resilience), istio.traffic_policy(resilience)]) >= 3


def test_fractional_ejection_percent_is_refused_not_rounded() -> None:
    resilience = Resilience.model_validate({"outlier_detection": {"max_ejection_percent": 12.5}})
    with pytest.raises(ValueError, match="max_ejection_percent must be a whole percent"):
        istio.traffic_policy(resilience)


def test_mtls_strict_and_deny_by_default() -> None:
    assert find("PeerAuthentication", "default")["spec"] == {"mtls": {"mode": "STRICT"}}
    assert find("AuthorizationPolicy", "allow-nothing")["spec"] == {}


def principals(policy: dict[str, Any]) -> set[str]:
    return {p for rule in policy["spec"]["rules"] for f in rule["from"] for p in f["source"]["principals"]}


def test_only_the_gateway_may_call_the_business_api() -> None:
    policy = find("AuthorizationPolicy", "digits-classify")
    assert policy["spec"]["selector"] == {"matchLabels": {"app": "digits-classify"}}
    assert policy["spec"]["action"] == "ALLOW"
    assert principals(policy) == {ENV.gateway_principal}


def test_only_pipeline_services_may_call_models_and_the_gateway_only_on_v2_paths() -> None:
    pipeline = {
        f"cluster.local/ns/{NS}/sa/{name}"
        for name in ("digits-classify", "digits-classify-preprocess", "digits-classify-postprocess")
    }
    digits = find("AuthorizationPolicy", "digits")
    assert digits["spec"]["selector"] == {"matchLabels": {"app": "digits"}}  # every version
    pipeline_rule, gateway_rule = digits["spec"]["rules"]
    assert {p for f in pipeline_rule["from"] for p in f["source"]["principals"]} == pipeline
    assert "to" not in pipeline_rule
    assert gateway_rule["from"] == [{"source": {"principals": [ENV.gateway_principal]}}]
    grpc = [f"/inference.GRPCInferenceService/{m}" for m in GRPC_EDGE_METHODS]
    assert gateway_rule["to"] == [{"operation": {"paths": ["/v2/models/digits", "/v2/models/digits/*", *grpc]}}]
    # resnet is in no pipeline: only the gateway's v2 paths and gRPC methods reach it
    (only,) = find("AuthorizationPolicy", "resnet")["spec"]["rules"]
    assert only["to"] == [{"operation": {"paths": ["/v2/models/resnet", "/v2/models/resnet/*", *grpc]}}]
    assert not any("Repository" in p for p in only["to"][0]["operation"]["paths"])  # an admin API


def test_grpc_retry_conditions_follow_the_spec() -> None:
    """Each 503-class HTTP condition gains Envoy's `unavailable` on routes that carry gRPC, once; a spec that
    retries nothing on 503 (or already names `unavailable`) gets nothing added; HTTP-only routes never do."""
    assert istio.retry_conditions(["connect-failure", "5xx", "gateway-error"], grpc=True) == [
        "connect-failure",
        "5xx",
        "gateway-error",
        "unavailable",
    ]
    assert istio.retry_conditions(["unavailable", "5xx"], grpc=True) == ["unavailable", "5xx"]
    assert istio.retry_conditions(["connect-failure", "reset"], grpc=True) == ["connect-failure", "reset"]
    assert istio.retry_conditions(["5xx"], grpc=False) == ["5xx"]


def test_without_grpc_the_model_routes_and_policies_are_http_only() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["grpc"] = {"enabled": False}
    objs = objects(validate_spec(doc))
    vs = find("VirtualService", "digits", objs)["spec"]
    assert vs["hosts"] == [f"digits.{NS}.svc.cluster.local"]
    assert vs["http"][-1]["retries"]["retryOn"] == "connect-failure,refused-stream,5xx"
    pool = find("DestinationRule", "digits", objs)["spec"]["trafficPolicy"]["connectionPool"]
    assert "http2MaxRequests" not in pool["http"]
    (only,) = find("AuthorizationPolicy", "resnet", objs)["spec"]["rules"]
    assert only["to"] == [{"operation": {"paths": ["/v2/models/resnet", "/v2/models/resnet/*"]}}]


def test_stages_accept_only_their_pipeline() -> None:
    policy = find("AuthorizationPolicy", "digits-classify-preprocess")
    assert all(p.startswith(f"cluster.local/ns/{NS}/sa/digits-classify") for p in principals(policy))
    assert ENV.gateway_principal not in principals(policy)


def test_stack_overrides_shape_the_routes() -> None:
    """A version emptied by the stack loses its header route; a model with nothing serving loses its route."""
    env = Environment(replicas={"digits-v2": 0, "resnet-v1": 0})
    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["models"]["digits"]["traffic"]["weights"] = {1: 100, 2: 0}
    objs = istio.compile_istio(validate_spec(doc), env)
    digits = find("VirtualService", "digits", objs)["spec"]["http"]
    assert [r["name"] for r in digits] == ["header-v1", "split"]
    assert not any(o["kind"] == "VirtualService" and o["metadata"]["name"] == "resnet" for o in objs)
    assert find("DestinationRule", "resnet", objs)["spec"]["subsets"] == [{"name": "v1", "labels": {"version": "v1"}}]


def test_an_override_may_not_empty_a_weighted_version() -> None:
    with pytest.raises(
        ValueError, match=r"replicas: digits-v2 is set to 0 by the stack config, but mesh.yaml sends it 10%"
    ):
        istio.compile_istio(SPEC, Environment(replicas={"digits-v2": 0}))
