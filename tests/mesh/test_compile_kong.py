"""mesh/compile/kong.py: key-auth and rate limits equal the spec's gateway block; consumers point at
their key Secrets (whose value comes from the caller, never from the spec); the Ingress validates."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from mesh.compile import kong
from mesh.compile.settings import Environment, load_stack
from mesh.spec import DEFAULT_SPEC_PATH, load_spec, read_yaml, validate_spec
from tests.mesh.schemas import validate_builtin

SPEC = load_spec()
ENV = Environment(domain="api.example.test", tls_secret="api-tls")


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in kong.compile_kong(SPEC, ENV) if o["kind"] == kind}


def test_plugins_equal_the_gateway_block() -> None:
    plugins = by_name("KongPlugin")
    gw = SPEC.gateway
    assert plugins["meshserve-key-auth"]["plugin"] == "key-auth"
    assert plugins["meshserve-key-auth"]["config"] == {"key_names": gw.key_names, "hide_credentials": True}
    default = plugins["meshserve-rate-limit"]
    assert default["plugin"] == "rate-limiting"
    assert default["config"] == {"second": 500, "limit_by": "consumer", "policy": "local"}
    assert plugins["rate-limit-demo"]["config"] == {"second": 2000, "limit_by": "consumer", "policy": "local"}
    for plugin in plugins.values():
        assert set(plugin) == {"apiVersion", "kind", "metadata", "plugin", "config"}
        assert plugin["apiVersion"] == "configuration.konghq.com/v1"


def test_consumer_carries_its_own_limit_and_credential() -> None:
    consumer = by_name("KongConsumer")["demo"]
    assert consumer["username"] == "demo"
    assert consumer["credentials"] == ["meshserve-demo-key"]
    assert consumer["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "kong",
        "konghq.com/plugins": "rate-limit-demo",
    }


def test_consumer_without_own_limit_gets_no_plugin() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    del doc["gateway"]["consumers"][0]["rate_limit"]
    spec = validate_spec(doc)
    objects = kong.compile_kong(spec, ENV)
    assert not any(o["metadata"]["name"] == "rate-limit-demo" for o in objects)
    consumer = next(o for o in objects if o["kind"] == "KongConsumer")
    assert "konghq.com/plugins" not in consumer["metadata"]["annotations"]


def test_key_secret_takes_the_value_from_the_caller() -> None:
    secret = kong.consumer_secret(SPEC.gateway.consumers[0], SPEC, ENV, "value-from-pulumi")
    validate_builtin(secret)
    assert secret["metadata"]["name"] == "meshserve-demo-key"
    assert secret["metadata"]["labels"]["konghq.com/credential"] == "key-auth"
    assert secret["stringData"] == {"key": "value-from-pulumi"}
    assert all(o["kind"] != "Secret" for o in kong.compile_kong(SPEC, ENV))


def test_consumer_without_a_kubernetes_secret_name_is_refused() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["gateway"]["consumers"][0]["api_key"] = {"env": "ONLY_LOCAL_KEY"}
    with pytest.raises(ValueError, match=r"gateway.consumers.demo.api_key.secret"):
        kong.compile_kong(validate_spec(doc), ENV)


def test_ingress_routes_pipelines_and_models_through_mesh_services() -> None:
    ingress = by_name("Ingress")["meshserve"]
    validate_builtin(ingress)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["konghq.com/plugins"] == "meshserve-key-auth,meshserve-rate-limit"
    assert annotations["konghq.com/preserve-host"] == "false"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "api.example.test"
    paths = {(p["path"], p["pathType"]): p["backend"]["service"] for p in rule["http"]["paths"]}
    assert paths == {
        ("/v1/digits:classify", "Exact"): {"name": "digits-classify", "port": {"name": "http"}},
        ("/v2/models/digits", "Prefix"): {"name": "digits", "port": {"name": "http"}},
        ("/v2/models/resnet", "Prefix"): {"name": "resnet", "port": {"name": "http"}},
    }
    assert ingress["spec"]["tls"] == [{"hosts": ["api.example.test"], "secretName": "api-tls"}]
    broken = copy.deepcopy(ingress)
    broken["spec"]["rules"][0]["http"]["paths"][0]["pathtype"] = "Exact"
    with pytest.raises(Exception, match="pathtype"):
        validate_builtin(broken)


def test_a_global_opentelemetry_plugin_sends_kong_spans_to_apm_with_its_token_from_a_secret() -> None:
    from mesh.compile import logging
    from mesh.compile.settings import Platform

    assert not [
        o
        for o in kong.compile_kong(SPEC, Environment(platform=Platform(logging=False)))
        if o["kind"] == "KongClusterPlugin"
    ]
    env = Environment(platform=Platform(logging=True))
    (plugin,) = [o for o in kong.compile_kong(SPEC, env) if o["kind"] == "KongClusterPlugin"]
    assert plugin["plugin"] == "opentelemetry"
    assert plugin["metadata"]["labels"]["global"] == "true"
    assert plugin["metadata"]["annotations"] == {"kubernetes.io/ingress.class": kong.INGRESS_CLASS}
    # the APM Server's OTLP/HTTP traces path on the Service ECK creates (`<ApmServer>-apm-http`)
    apm = next(o for o in logging.compile_logging(env) if o["kind"] == "ApmServer")
    service = f"http://{apm['metadata']['name']}-apm-http.{env.logging_namespace}.svc:8200"
    # KIC 3.0 (the pinned chart's) has `configFrom`, not `configPatches`; `config` and `configFrom` exclude
    # each other, so the whole config, token included, comes from the Secret and none sits in the object.
    assert "config" not in plugin and "configPatches" not in plugin
    secret = kong.tracing_secret(kong.tracing_config(env, "tok en/+"))
    validate_builtin(secret)
    ref = plugin["configFrom"]["secretKeyRef"]
    assert ref == {
        "name": secret["metadata"]["name"],
        "namespace": secret["metadata"]["namespace"],
        "key": next(iter(secret["stringData"])),
    }
    config = json.loads(secret["stringData"][ref["key"]])
    assert config["endpoint"] == f"{service}/v1/traces"
    assert config["resource_attributes"] == {"service.name": "kong"}
    assert config["headers"] == {"Authorization": "Bearer tok en/+"}
    # the same header the pods send (their OTEL_EXPORTER_OTLP_HEADERS, percent-encoded)
    from urllib.parse import unquote

    name, _, value = logging.otlp_headers("tok en/+").partition("=")
    assert {name: unquote(value)} == config["headers"]


def test_the_render_command_for_the_tracing_secret_gives_the_same_headers() -> None:
    """`meshserve render` prints a kubectl command instead of the Secret: run it through bash with a
    stand-in kubectl and compare the value with what infra/ writes (`tracing_config`)."""
    import subprocess

    from mesh.render import secret_instructions

    (line,) = [
        c
        for c in secret_instructions(DEFAULT_SPEC_PATH, "prod", DEFAULT_SPEC_PATH.parents[1])
        if kong.TRACING_SECRET in c
    ]
    script = 'kubectl() { printf "%s\\n" "$@"; }\n' + line
    token = "0f3a9c" * 8
    out = subprocess.run(["bash", "-c", script], env={"APM_TOKEN": token}, capture_output=True, text=True, check=True)
    literal = next(a for a in out.stdout.splitlines() if a.startswith("--from-literal="))
    key, _, value = literal.removeprefix("--from-literal=").partition("=")
    assert key == kong.TRACING_SECRET_KEY
    env = load_stack("prod", DEFAULT_SPEC_PATH.parents[1])
    assert json.loads(value) == json.loads(kong.tracing_config(env, token))


# --------------------------------------------------------------------------- gRPC at the edge

PROTO = DEFAULT_SPEC_PATH.parents[1] / "services" / "common" / "proto" / "inference.proto"


def grpc_ingress(spec=SPEC, env=ENV) -> dict[str, Any]:
    (ingress,) = [o for o in kong.compile_kong(spec, env) if o["metadata"]["name"] == kong.GRPC_INGRESS]
    return ingress


def test_grpc_ingress_routes_each_model_host_to_its_grpc_service() -> None:
    """gRPC names the model inside the message: one host per model (`<model>.<domain>`), an Exact path per
    exposed v2 method, to `<model>-grpc`'s `grpc` port; the same key-auth and rate limit as HTTP."""
    ingress = grpc_ingress()
    validate_builtin(ingress)
    annotations = ingress["metadata"]["annotations"]
    assert annotations == {
        "konghq.com/plugins": "meshserve-key-auth,meshserve-rate-limit",
        "konghq.com/protocols": "grpcs",
        "konghq.com/preserve-host": "false",
        "konghq.com/strip-path": "false",  # Kong refuses strip_path on grpc/grpcs routes
    }
    assert ingress["spec"]["ingressClassName"] == "kong"
    methods = [
        "ServerLive",
        "ServerReady",
        "ServerMetadata",
        "ModelReady",
        "ModelMetadata",
        "ModelConfig",
        "ModelStatistics",
        "ModelInfer",
    ]
    rules = {r["host"]: r["http"]["paths"] for r in ingress["spec"]["rules"]}
    assert set(rules) == {"digits.api.example.test", "resnet.api.example.test"}
    for model in SPEC.models:
        paths = rules[f"{model}.api.example.test"]
        assert [(p["path"], p["pathType"]) for p in paths] == [
            (f"/inference.GRPCInferenceService/{m}", "Exact") for m in methods
        ]
        assert all(p["backend"] == {"service": {"name": f"{model}-grpc", "port": {"name": "grpc"}}} for p in paths)
    assert ingress["spec"]["tls"] == [
        {"hosts": ["digits.api.example.test", "resnet.api.example.test"], "secretName": "api-tls"}
    ]
    broken = copy.deepcopy(ingress)
    broken["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["nmae"] = "grpc"
    with pytest.raises(Exception, match="nmae"):
        validate_builtin(broken)


def test_the_edge_exposes_real_v2_methods_and_never_the_repository() -> None:
    """Every method routed is an rpc of the served .proto; the admin RPCs (repository, shared memory) are not."""
    rpcs = set(re.findall(r"^\s*rpc (\w+)\(", PROTO.read_text(), re.MULTILINE))
    assert {"ModelInfer", "RepositoryModelLoad"} <= rpcs
    exposed = {p["path"].rsplit("/", 1)[1] for r in grpc_ingress()["spec"]["rules"] for p in r["http"]["paths"]}
    assert exposed <= rpcs
    assert not {m for m in exposed if m.startswith(("Repository", "System", "Cuda"))}


def test_the_grpc_backend_is_the_models_pods_speaking_grpc_through_the_mesh() -> None:
    """`<model>-grpc` selects the same pods as the `<model>` host, on the same `grpc` port; Kong proxies it
    as a Service (so its sidecar routes) with the `<model>` host, whose VirtualService splits it."""
    from mesh.compile import k8s

    core = {o["metadata"]["name"]: o for o in k8s.compile_core(SPEC, ENV) if o["kind"] == "Service"}
    for model in SPEC.models:
        service = core[f"{model}-grpc"]
        validate_builtin(service)
        host = core[model]
        assert service["spec"]["selector"] == host["spec"]["selector"] == {"app": model}
        (port,) = service["spec"]["ports"]
        assert port == next(p for p in host["spec"]["ports"] if p["name"] == "grpc")
        assert port["port"] == SPEC.grpc.port and port["appProtocol"] == "grpc"
        assert service["metadata"]["annotations"] == {
            "konghq.com/protocol": "grpc",
            "ingress.kubernetes.io/service-upstream": "true",
            "konghq.com/host-header": f"{model}.meshserve.svc.cluster.local",
        }
        # the HTTP host keeps Kong's default (http) protocol: the annotation is per Service, not per port
        assert "konghq.com/protocol" not in host["metadata"]["annotations"]


def test_grpc_host_pattern_comes_from_the_stack() -> None:
    from mesh.compile.settings import SettingsError, environment_from_config

    env = environment_from_config(
        {"meshserve:domain": "example.org", "meshserve:grpcHost": "{model}-grpc.ml.{domain}"}, stack="t"
    )
    assert {r["host"] for r in grpc_ingress(env=env)["spec"]["rules"]} == {
        "digits-grpc.ml.example.org",
        "resnet-grpc.ml.example.org",
    }
    assert "tls" not in grpc_ingress(env=env)["spec"]
    for pattern, message in (
        ("grpc.{domain}", "must contain {model}"),
        ("{model}.{zone}", "only the placeholders {model} and {domain}"),
        ("{model}.Example.org", "not a DNS name"),
        ("{model}..{domain}", "not a DNS name"),
    ):
        with pytest.raises(SettingsError, match=re.escape(message)):
            environment_from_config({"meshserve:grpcHost": pattern}, stack="t")


def test_without_grpc_or_without_kong_there_is_no_grpc_route() -> None:
    from mesh.compile import k8s
    from mesh.compile.settings import Platform

    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["grpc"] = {"enabled": False}
    off = validate_spec(doc)
    assert [o["metadata"]["name"] for o in kong.compile_kong(off, ENV) if o["kind"] == "Ingress"] == ["meshserve"]
    assert not any(o["metadata"]["name"].endswith("-grpc") for o in k8s.compile_core(off, ENV))
    no_kong = Environment(platform=Platform(kong=False))
    assert not any(o["metadata"]["name"].endswith("-grpc") for o in k8s.compile_core(SPEC, no_kong))


def test_a_pipeline_that_takes_a_grpc_service_name_is_refused() -> None:
    from mesh.compile import k8s

    doc = read_yaml(DEFAULT_SPEC_PATH)
    pipeline = doc["pipelines"].pop("digits-classify")
    doc["pipelines"]["digits-grpc"] = pipeline
    with pytest.raises(ValueError, match=r"\['digits-grpc'\] are needed for the models' gRPC routes"):
        k8s.compile_core(validate_spec(doc), ENV)
