"""mesh/compile/k8s.py: core objects validate against Kubernetes 1.30+ schemas (strict) and carry the
production properties the issue asks for: GPU only where the spec says gpu, probes on the health
endpoints, a grace period longer than the drain, non-root read-only containers, named ports."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mesh.compile import k8s
from mesh.compile.names import workloads
from mesh.compile.settings import Environment, ModelStore, Platform
from mesh.spec import Grpc, load_spec, validate_spec
from tests.mesh.schemas import validate_builtin

SPEC = load_spec()
ENVS = {
    "s3+istio": Environment(),
    "pvc, no platform": Environment(
        model_store=ModelStore(type="pvc", claim="models"),
        platform=Platform(gpu=False, istio=False, kong=False, monitoring=False, logging=False, keda=False),
    ),
}


@pytest.fixture(params=list(ENVS), scope="module")
def env(request: pytest.FixtureRequest) -> Environment:
    return ENVS[request.param]


@pytest.fixture(scope="module")
def objects(env: Environment) -> list[dict[str, Any]]:
    return k8s.compile_core(SPEC, env)


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_object_validates_strictly(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        validate_builtin(obj)


def test_the_validator_is_strict_about_unknown_fields(objects: list[dict[str, Any]]) -> None:
    deployment = json.loads(json.dumps(of_kind(objects, "Deployment")["digits-v1"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(deployment)


def test_one_deployment_service_account_and_service_per_workload(objects: list[dict[str, Any]], env: Environment):
    names = {w.name for w in workloads(SPEC, env)}
    assert names == {
        "digits-v1",
        "digits-v2",
        "resnet-v1",
        "digits-classify-preprocess",
        "digits-classify-postprocess",
        "digits-classify",
    }
    assert set(of_kind(objects, "Deployment")) == names
    assert set(of_kind(objects, "ServiceAccount")) == names
    assert set(of_kind(objects, "PodDisruptionBudget")) == names
    grpc = {"digits-grpc", "resnet-grpc"} if env.platform.kong else set()  # Kong's gRPC backends
    assert set(of_kind(objects, "Service")) == names | {"digits", "resnet"} | grpc


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return pod["containers"] + pod.get("initContainers", [])


def test_gpu_limits_tolerations_and_node_selector_only_on_gpu_versions(objects: list[dict[str, Any]]) -> None:
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        gpu = name == "resnet-v1"  # the only version with device: gpu in the demo spec
        assert ("nvidia.com/gpu" in limits) is gpu, name
        assert ("tolerations" in pod) is gpu, name
        assert ("nodeSelector" in pod) is gpu, name
        assert pod["containers"][0]["image"].split(":")[0].endswith("-gpu") is gpu, name
    resnet = of_kind(objects, "Deployment")["resnet-v1"]["spec"]["template"]["spec"]
    assert resnet["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert resnet["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_spec_resources_reach_the_container(objects: list[dict[str, Any]]) -> None:
    resources = of_kind(objects, "Deployment")["digits-v1"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    declared = SPEC.models["digits"].versions[1].resources
    assert resources == {"requests": declared.requests, "limits": declared.limits}


def test_hardened_containers(objects: list[dict[str, Any]]) -> None:
    for deployment in of_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        for container in containers(deployment):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "add" not in context["capabilities"]
            assert {"requests", "limits"} <= set(container["resources"])
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # writable scratch


def test_probes_and_drain(objects: list[dict[str, Any]], env: Environment) -> None:
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        server = pod["containers"][0]
        model = deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "model"
        live, ready = ("/v2/health/live", "/v2/health/ready") if model else ("/healthz", "/ready")
        assert server["livenessProbe"]["httpGet"] == {"path": live, "port": "http"}, name
        assert server["readinessProbe"]["httpGet"] == {"path": ready, "port": "http"}, name
        prestop = int(server["lifecycle"]["preStop"]["exec"]["command"][1])
        assert prestop == env.prestop_seconds
        if model:
            drain = int(server["command"][server["command"].index("--drain-limit") + 1])
            assert drain == env.drain_seconds
        assert pod["terminationGracePeriodSeconds"] > env.prestop_seconds + env.drain_seconds


def test_commands_name_the_workload(objects: list[dict[str, Any]]) -> None:
    deployments = of_kind(objects, "Deployment")
    model = deployments["digits-v2"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert model[:2] == ["meshserve", "serve"]
    assert model[model.index("--model") + 1] == "digits:2"
    stage = deployments["digits-classify-preprocess"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert stage[:3] == ["python", "-m", "services.pipeline"]
    assert stage[stage.index("--service") + 1] == "digits-classify-preprocess"


def test_gpu_versions_refuse_readiness_on_the_cpu_unless_the_spec_allows_it(
    objects: list[dict[str, Any]], env: Environment
) -> None:
    """A `device: gpu` pod that got only the CPU provider must not serve (mesh/compile/k8s.py `_device`)."""
    deployments = of_kind(objects, "Deployment")
    for name, deployment in deployments.items():
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        gpu = name == "resnet-v1"  # the demo spec's only `device: gpu` version
        assert ("--require-device" in command) is gpu, name
        if gpu:
            assert command[command.index("--require-device") + 1] == "gpu"
    document = SPEC.model_dump(mode="json")
    document["models"]["resnet"]["versions"]["1"]["cpu_fallback"] = True
    relaxed = validate_spec(document)
    (resnet,) = [
        o for o in k8s.compile_core(relaxed, env) if o["metadata"]["name"] == "resnet-v1" and o["kind"] == "Deployment"
    ]
    assert "--require-device" not in resnet["spec"]["template"]["spec"]["containers"][0]["command"]


def test_model_artifacts_without_rebuilding_the_image(objects: list[dict[str, Any]], env: Environment) -> None:
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        models = next(v for v in pod["volumes"] if v["name"] == "models")
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
        assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}
        if env.model_store.type == "pvc":
            assert models["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
            assert "initContainers" not in pod
            continue
        assert "emptyDir" in models
        (sync,) = pod["initContainers"]
        command = sync["command"]
        assert command[:3] == ["aws", "s3", "sync"]
        if name == "digits-v2":  # a model pod takes exactly its version
            assert command[3:5] == ["s3://meshserve-models/models/digits/", "/models/digits/"]
            assert command[-2:] == ["--include", "2/*"]
        if name == "digits-classify":  # pipeline pods take the repository
            assert command[3:5] == ["s3://meshserve-models/models/", "/models/"]


def test_replicas_and_overrides() -> None:
    env = Environment(replicas={"digits-classify": 4, "digits-v1": 5}, platform=Platform(keda=False))
    deployments = of_kind(k8s.compile_core(SPEC, env), "Deployment")
    assert deployments["digits-classify"]["spec"]["replicas"] == 4
    assert deployments["digits-v1"]["spec"]["replicas"] == 5
    assert deployments["digits-v2"]["spec"]["replicas"] == SPEC.models["digits"].versions[2].replicas
    # With KEDA the ScaledObject owns model replicas: the Deployment leaves the field to it.
    keda = of_kind(k8s.compile_core(SPEC, Environment()), "Deployment")
    assert "replicas" not in keda["digits-v1"]["spec"]
    assert keda["digits-classify"]["spec"]["replicas"] == 1


def test_services_have_named_ports_and_select_their_pods(objects: list[dict[str, Any]]) -> None:
    deployments = of_kind(objects, "Deployment")
    for name, service in of_kind(objects, "Service").items():
        ports = service["spec"]["ports"]
        assert all(p.get("name") for p in ports), name
        http = {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
        if name.endswith("-grpc"):  # Kong's gRPC backend: the gRPC port alone (Kong's protocol is per Service)
            assert [p["name"] for p in ports] == ["grpc"], name
        else:
            assert ports[0] == http, name
        selector = service["spec"]["selector"]
        selected = [
            d for d in deployments.values() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {name} selects no pods"
    host = of_kind(objects, "Service")["digits"]["spec"]["selector"]
    assert host == {"app": "digits"}  # every version: Istio picks the subset


def test_pods_get_a_spec_without_weights_and_a_discovery_file(objects: list[dict[str, Any]]) -> None:
    config = of_kind(objects, "ConfigMap")["meshserve-spec"]["data"]
    document = yaml.safe_load(config["mesh.yaml"])
    assert all("traffic" not in m for m in document["models"].values())
    assert document["repository"] == "/models"
    spec = validate_spec(document)  # the pods' copy is itself a valid spec
    assert spec.models["digits"].resilience == SPEC.models["digits"].resilience
    endpoints = json.loads(config["endpoints.json"])["services"]
    assert set(endpoints) == {w.name for w in workloads(SPEC, Environment())} | {"digits", "resnet"}
    assert endpoints["digits-v1"] == [
        {
            "instance": "digits-v1",
            "host": "digits-v1.meshserve.svc.cluster.local",
            "port": 8000,
            "meta": {"version": "1", "grpc_port": "9000"},
        }
    ]


def test_namespace_injection_follows_istio(env: Environment, objects: list[dict[str, Any]]) -> None:
    (namespace,) = of_kind(objects, "Namespace").values()
    assert (namespace["metadata"]["labels"].get("istio-injection") == "enabled") is env.platform.istio


def test_kong_upstream_annotations_only_on_gateway_backends() -> None:
    services = of_kind(k8s.compile_core(SPEC, Environment()), "Service")
    for name, service in services.items():
        annotations = service["metadata"].get("annotations", {})
        exposed = name in {"digits-classify", "digits", "resnet", "digits-grpc", "resnet-grpc"}
        assert (annotations.get("ingress.kubernetes.io/service-upstream") == "true") is exposed, name
        if exposed:  # a gRPC backend sends its model's host: the `<model>` VirtualService routes it
            host = name.removesuffix("-grpc")
            assert annotations["konghq.com/host-header"] == f"{host}.meshserve.svc.cluster.local"


def test_model_servers_carry_the_grpc_port(objects: list[dict[str, Any]]) -> None:
    """Container port `grpc` and the server listening on it; Service ports with appProtocol grpc (Istio
    then carries HTTP/2) on every model version Service and the model host; none on pipeline services."""
    grpc_port = SPEC.grpc.port
    for name, deployment in of_kind(objects, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if name.startswith(("digits-v", "resnet-v")):
            assert ports["grpc"] == grpc_port, name
            command = container["command"]
            assert command[command.index("--grpc-port") + 1] == str(grpc_port)
        else:
            assert "grpc" not in ports and "--grpc-port" not in container["command"], name
    services = of_kind(objects, "Service")
    for name in ("digits-v1", "digits-v2", "resnet-v1", "digits", "resnet"):
        grpc = [p for p in services[name]["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc == [
            {"name": "grpc", "port": grpc_port, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
        ], name
    assert all(p["name"] != "grpc" for p in services["digits-classify"]["spec"]["ports"])


def test_grpc_can_be_turned_off() -> None:
    spec = SPEC.model_copy(update={"grpc": Grpc(enabled=False)})
    objects = k8s.compile_core(spec, Environment())
    for deployment in of_kind(objects, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "--grpc-port" not in container["command"] and len(container["ports"]) == 1
    assert all(p["name"] != "grpc" for s in of_kind(objects, "Service").values() for p in s["spec"]["ports"])
