"""mesh/compile/keda.py: a ScaledObject per serving model version, on the queue-depth metric the model
server exports, floors and ceilings from the spec and the stack."""

from __future__ import annotations

from mesh.compile import compile_all, keda
from mesh.compile.settings import Autoscaling, Environment, Platform
from mesh.spec import DEFAULT_SPEC_PATH, load_spec, read_yaml, validate_spec
from services.modelserver import metrics
from tests.mesh.schemas import validate_custom

SPEC = load_spec()


def test_one_scaled_object_per_serving_version_and_valid() -> None:
    env = Environment(replicas={"digits-v1": 3}, autoscaling=Autoscaling(max_factor=5, queue_depth_target=4))
    objects = {o["metadata"]["name"]: o for o in keda.compile_keda(SPEC, env)}
    assert set(objects) == {"digits-v1", "digits-v2", "resnet-v1"}
    for name, obj in objects.items():
        validate_custom(obj)
        assert obj["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    digits = objects["digits-v1"]["spec"]
    assert (digits["minReplicaCount"], digits["maxReplicaCount"]) == (3, 15)
    (trigger,) = digits["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"] == {
        "serverAddress": "http://kps-prometheus.monitoring.svc:9090",
        "query": 'sum(meshserve_inference_queue_depth{namespace="meshserve",model="digits",version="1"})',
        "threshold": "4",
    }


# KEDA 2.16 prometheus scaler, trigger metadata (keda.sh/docs/2.16/scalers/prometheus): every key it reads.
PROMETHEUS_REQUIRED = {"serverAddress", "query", "threshold"}
PROMETHEUS_OPTIONAL = {
    "activationThreshold",
    "namespace",
    "customHeaders",
    "ignoreNullValues",
    "queryParameters",
    "unsafeSsl",
    "timeout",
    "authModes",
}


def test_prometheus_trigger_metadata_uses_only_keys_keda_reads() -> None:
    """A misspelled key (`serveraddress`, `treshold`) is silently ignored by KEDA: the key set must be exact."""
    envs = [Environment(), Environment(autoscaling=Autoscaling(queue_depth_target=3, polling_interval=5))]
    triggers = [t for env in envs for o in keda.compile_keda(SPEC, env) for t in o["spec"]["triggers"]]
    assert triggers
    for trigger in triggers:
        assert trigger["type"] == "prometheus"
        keys = set(trigger["metadata"])
        assert keys >= PROMETHEUS_REQUIRED, keys
        assert keys <= PROMETHEUS_REQUIRED | PROMETHEUS_OPTIONAL, keys - PROMETHEUS_REQUIRED - PROMETHEUS_OPTIONAL
        # metadata is map[string]string in the CRD: a number fails admission
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
        assert float(trigger["metadata"]["threshold"]) > 0


def test_the_query_uses_the_model_servers_own_metric_and_labels() -> None:
    queries = [t["metadata"]["query"] for o in keda.compile_keda(SPEC, Environment()) for t in o["spec"]["triggers"]]
    assert queries and all(q.startswith(f"sum({metrics.QUEUE_DEPTH.describe()[0].name}{{") for q in queries), queries
    assert set(metrics.QUEUE_DEPTH.labelnames) == {"model", "version"}


def test_a_version_with_no_replicas_is_not_autoscaled() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["models"]["digits"]["traffic"]["weights"] = {1: 100, 2: 0}
    doc["models"]["digits"]["versions"][2]["replicas"] = 0
    names = {o["metadata"]["name"] for o in keda.compile_keda(validate_spec(doc), Environment())}
    assert names == {"digits-v1", "resnet-v1"}


def test_nothing_when_keda_is_off() -> None:
    assert compile_all(SPEC, Environment(platform=Platform(keda=False)))["keda"] == []
