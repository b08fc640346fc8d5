"""The Pulumi program under mocks, for both example stacks (no CLI, no cluster): the inventory, GPU
placement, ordering (custom resources after the charts that bring their CRDs), secrets never in plain
text, and the references between objects (Service -> pods, ServiceMonitor -> Service port,
VirtualService -> host and subsets). One program run per stack, shared by the module."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from infra import charts
from infra.config import read_environment
from mesh.compile import compile_all, flatten, kong
from mesh.compile.settings import load_stack
from mesh.spec import load_spec
from tests.infra.harness import (
    OIDC_ISSUER,
    OIDC_PROVIDER_ARN,
    ROOT,
    SECRET_SIG,
    SECRET_VALUE,
    SECRET_VALUES,
    SECRETS,
    Registration,
    Run,
    role_arn,
    run_program,
)

SPEC = load_spec()
# API group of a custom resource -> the Helm release that installs its CRDs.
CRD_CHARTS = {
    "networking.istio.io": "istio-base",
    "security.istio.io": "istio-base",
    "configuration.konghq.com": "kong",
    "monitoring.coreos.com": "kps",
    "keda.sh": "keda",
    "elasticsearch.k8s.elastic.co": "eck-operator",
    "kibana.k8s.elastic.co": "eck-operator",
    "apm.k8s.elastic.co": "eck-operator",
    "beat.k8s.elastic.co": "eck-operator",
}
BUILTIN_PREFIXES = ("kubernetes:core/", "kubernetes:apps/", "kubernetes:policy/", "kubernetes:networking.k8s.io/")


@pytest.fixture(scope="module", params=["dev", "prod"])
def run(request: pytest.FixtureRequest) -> Run:
    return run_program(request.param)


def k8s_objects(run: Run) -> list[Registration]:
    return [r for r in run.registrations if r.type.startswith("kubernetes:") and r.kind != "Release"]


def token(obj: dict[str, Any]) -> str:
    api = "core/v1" if obj["apiVersion"] == "v1" else obj["apiVersion"]
    return f"kubernetes:{api}:{obj['kind']}"


def name_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def releases(run: Run) -> dict[str, Registration]:
    return {r.name: r for r in run.of_kind("Release")}


# --------------------------------------------------------------------------- inventory


def test_program_reads_the_same_settings_as_render(run: Run) -> None:
    assert read_environment() == load_stack(run.stack, ROOT)


def test_inventory_is_exactly_the_compiled_objects_plus_secrets(run: Run) -> None:
    env = load_stack(run.stack, ROOT)
    expected = {(token(o), name_of(o)) for o in flatten(compile_all(SPEC, env))}
    expected |= {("kubernetes:core/v1:Secret", "meshserve/meshserve-demo-key")}
    expected |= {("kubernetes:core/v1:Namespace", "kong"), ("kubernetes:core/v1:Namespace", "monitoring")}
    expected |= {("kubernetes:core/v1:Secret", "monitoring/grafana-admin")}
    if env.cluster.provider == "eks":
        expected |= {("kubernetes:storage.k8s.io/v1:StorageClass", "gp3")}
    if env.platform.logging:
        expected |= {("kubernetes:core/v1:Secret", "logging/meshserve-elastic-admin")}
        expected |= {("kubernetes:core/v1:Secret", "logging/meshserve-apm-keystore")}
        expected |= {("kubernetes:core/v1:Secret", "meshserve/meshserve-otlp-headers")}
        expected |= {("kubernetes:core/v1:Secret", "kong/meshserve-kong-otlp")}
    actual = [(r.type, r.name) for r in k8s_objects(run)]
    assert len(actual) == len(set(actual))
    assert set(actual) == expected


def test_charts_are_pinned_and_match_the_platform(run: Run) -> None:
    wanted = {"istio-base", "istiod", "kong", "kps", "keda"}
    if run.stack == "prod":
        wanted |= {"eck-operator", "nvidia-device-plugin", "dcgm-exporter", "cluster-autoscaler"}
    found = releases(run)
    assert set(found) == wanted
    pins = {c.chart: c for c in vars(charts).values() if isinstance(c, charts.Chart)}
    for release in found.values():
        pin = pins[release.inputs["chart"]]
        assert release.inputs["version"] == pin.version
        assert release.inputs["repositoryOpts"] == {"repo": pin.repo}


def test_components_read_like_the_architecture(run: Run) -> None:
    components = {r.type.split(":")[-1] for r in run.registrations if r.type.startswith("meshserve:infra:")}
    common = {"Cluster", "Mesh", "Workloads", "TrafficPolicies", "Gateway", "Monitoring", "Autoscaling"}
    assert components == (common | {"Logging", "Gpu", "NodeAutoscaling"} if run.stack == "prod" else common)


def test_every_kubernetes_resource_uses_the_cluster_provider(run: Run) -> None:
    (provider,) = [r for r in run.registrations if r.type == "pulumi:providers:kubernetes"]
    for r in run.registrations:
        if r.type.startswith("kubernetes:"):
            assert r.provider.startswith(provider.urn + "::"), r.name


def test_prod_builds_eks_with_a_tainted_gpu_node_group(run: Run) -> None:
    if run.stack != "prod":
        assert not run.of_kind("Cluster") or all(r.type == "meshserve:infra:Cluster" for r in run.of_kind("Cluster"))
        (provider,) = [r for r in run.registrations if r.type == "pulumi:providers:kubernetes"]
        assert provider.inputs["context"] == "kind-meshserve"
        return
    (cluster,) = [r for r in run.registrations if r.type == "eks:index:Cluster"]
    assert cluster.inputs["skipDefaultNodeGroup"] is True
    assert cluster.inputs["createOidcProvider"] is True
    groups = {r.name: r.inputs for r in run.registrations if r.type == "eks:index:ManagedNodeGroup"}
    gpu, cpu = groups["cluster-gpu"], groups["cluster-cpu"]
    assert gpu["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert gpu["labels"] == {"meshserve.io/pool": "gpu", "nvidia.com/gpu.present": "true"}
    assert gpu["amiType"] == "AL2023_x86_64_NVIDIA"
    assert gpu["instanceTypes"] == ["g5.xlarge"]
    assert "taints" not in cpu
    assert cpu["scalingConfig"] == {"minSize": 3.0, "desiredSize": 3.0, "maxSize": 6.0}


# --------------------------------------------------------------------------- GPU placement


def test_gpu_limits_and_tolerations_only_on_gpu_versions(run: Run) -> None:
    gpu_versions = {f"{m}-v{v}" for m, ms in SPEC.models.items() for v, vs in ms.versions.items() if vs.device == "gpu"}
    assert gpu_versions == {"resnet-v1"}
    for deployment in run.of_kind("Deployment"):
        name = deployment.inputs["metadata"]["name"]
        pod = deployment.inputs["spec"]["template"]["spec"]
        gpu = name in gpu_versions
        assert ("nvidia.com/gpu" in pod["containers"][0]["resources"]["limits"]) is gpu, name
        assert ("tolerations" in pod) is gpu, name
        assert ("nodeSelector" in pod) is gpu, name
        if gpu:
            assert pod["nodeSelector"] == {"meshserve.io/pool": "gpu"}
    if run.stack == "prod":  # the device plugin runs on exactly those nodes
        plugin = releases(run)["nvidia-device-plugin"].inputs["values"]
        assert plugin["nodeSelector"] == {"meshserve.io/pool": "gpu"}
        assert plugin["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def term_matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    """One nodeSelectorTerm against a node's labels (the operators the charts use)."""
    for e in term.get("matchExpressions", []):
        value = labels.get(e["key"])
        ok = {
            "In": value in e.get("values", []),
            "NotIn": value not in e.get("values", []),
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[e["operator"]]
        if not ok:
            return False
    return True


def schedulable(values: dict[str, Any], labels: dict[str, str], taints: list[dict[str, str]]) -> bool:
    """Would a pod with these chart values (nodeSelector, affinity, tolerations) land on this node?"""
    if not values.get("nodeSelector", {}).items() <= labels.items():
        return False
    required = values.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None and not any(term_matches(t, labels) for t in required["nodeSelectorTerms"]):
        return False
    return all(any(tolerates(t, taint) for t in values.get("tolerations", [])) for taint in taints)


def tolerates(toleration: dict[str, str], taint: dict[str, str]) -> bool:
    """A pod toleration against an EKS node group taint (effect spelled NO_SCHEDULE there)."""
    effect = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
    if toleration.get("effect") not in (None, effect[taint["effect"]]):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key") in (None, taint["key"])
    return toleration.get("key") == taint["key"] and toleration.get("value") == taint["value"]


# The nvidia-device-plugin 0.17.0 chart's default affinity (values.yaml): NFD/GFD labels.
DEVICE_PLUGIN_DEFAULT_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}
                    ]
                },
                {
                    "matchExpressions": [
                        {
                            "key": "feature.node.kubernetes.io/cpu-model.vendor_id",
                            "operator": "In",
                            "values": ["NVIDIA"],
                        }
                    ]
                },
                {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]},
            ]
        }
    }
}


def test_gpu_daemonsets_schedule_on_the_eks_gpu_nodes_and_only_there(run: Run) -> None:
    if run.stack != "prod":
        return
    groups = {r.name: r.inputs for r in run.registrations if r.type == "eks:index:ManagedNodeGroup"}
    gpu, cpu = groups["cluster-gpu"], groups["cluster-cpu"]
    for name in ("nvidia-device-plugin", "dcgm-exporter"):
        values = releases(run)[name].inputs["values"]
        # Our values replace the chart's NFD/GFD affinity (Helm replaces lists); and even the chart default
        # would now match, since the GPU nodes carry nvidia.com/gpu.present=true.
        assert schedulable(values, gpu["labels"], gpu["taints"]), name
        assert schedulable({**values, "affinity": DEVICE_PLUGIN_DEFAULT_AFFINITY}, gpu["labels"], gpu["taints"])
        assert not schedulable(values, cpu["labels"], []), name
    # the checker itself: an unlabelled GPU node fails the chart default; a missing toleration fails the taint
    bare = {"meshserve.io/pool": "gpu"}
    assert not schedulable({"affinity": DEVICE_PLUGIN_DEFAULT_AFFINITY, "tolerations": []}, bare, [])
    assert not schedulable({}, bare, gpu["taints"])


def statement(policy_json: str) -> dict[str, Any]:
    import json

    (only,) = json.loads(policy_json)["Statement"]
    return only


def test_ebs_csi_add_on_and_a_default_gp3_class_before_elasticsearch(run: Run) -> None:
    classes = run.of_kind("StorageClass")
    addons = [r for r in run.registrations if r.type == "aws:eks/addon:Addon"]
    if run.stack != "prod":
        assert classes == [] and addons == []
        return
    (addon,) = addons
    (sc,) = classes
    assert addon.inputs["addonName"] == "aws-ebs-csi-driver"
    assert addon.inputs["clusterName"] == "meshserve-prod"
    (cluster,) = [r for r in run.registrations if r.type == "eks:index:Cluster"]
    assert cluster.inputs["name"] == "meshserve-prod"
    role = next(r for r in run.registrations if r.type == "aws:iam/role:Role" and r.name == "cluster-ebs-csi")
    assert addon.inputs["serviceAccountRoleArn"] == role_arn("cluster-ebs-csi")
    trust = statement(role.inputs["assumeRolePolicy"])
    assert trust["Principal"] == {"Federated": OIDC_PROVIDER_ARN}
    assert (
        trust["Condition"]["StringEquals"][f"{OIDC_ISSUER}:sub"]
        == "system:serviceaccount:kube-system:ebs-csi-controller-sa"
    )
    attached = [
        r.inputs["policyArn"]
        for r in run.registrations
        if r.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment" and r.inputs["role"] == "cluster-ebs-csi"
    ]
    assert attached == ["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]
    assert sc.inputs["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert sc.inputs["provisioner"] == "ebs.csi.aws.com"
    assert sc.inputs["parameters"]["type"] == "gp3"
    assert sc.inputs["volumeBindingMode"] == "WaitForFirstConsumer"
    assert addon.urn in sc.dependencies
    (es,) = run.of_kind("Elasticsearch")
    assert sc.urn in es.dependencies
    assert "storageClassName" not in str(es.inputs)  # the default class applies


def test_model_sync_role_is_trusted_by_this_stacks_oidc_provider_and_annotates_the_service_accounts(run: Run) -> None:
    accounts = [r for r in run.of_kind("ServiceAccount") if r.name.startswith("meshserve/")]
    assert accounts
    readers = [r for r in run.registrations if r.type == "aws:iam/role:Role" and r.name == "cluster-model-reader"]
    if run.stack != "prod":  # pvc model store: no IRSA
        assert readers == []
        assert all("annotations" not in a.inputs["metadata"] for a in accounts)
        return
    (reader,) = readers
    trust = statement(reader.inputs["assumeRolePolicy"])
    assert trust["Principal"] == {"Federated": OIDC_PROVIDER_ARN}
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"]["StringLike"] == {
        f"{OIDC_ISSUER}:sub": "system:serviceaccount:meshserve:*",
        f"{OIDC_ISSUER}:aud": "sts.amazonaws.com",
    }
    (policy,) = [
        r for r in run.registrations if r.type == "aws:iam/rolePolicy:RolePolicy" and r.name == "cluster-model-reader"
    ]
    assert policy.inputs["role"] == "cluster-model-reader-id"
    import json

    statements = json.loads(policy.inputs["policy"])["Statement"]
    assert {s["Action"] for s in statements} == {"s3:ListBucket", "s3:GetObject"}
    assert {s["Resource"] for s in statements} == {
        "arn:aws:s3:::meshserve-models-prod",
        "arn:aws:s3:::meshserve-models-prod/models/*",
    }
    for account in accounts:
        assert account.inputs["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": role_arn("cluster-model-reader")
        }


def test_config_role_arn_overrides_the_stack_role() -> None:
    import json

    from tests.infra.harness import stack_config

    store = json.loads(stack_config("prod")["meshserve:modelStore"])
    given = "arn:aws:iam::210987654321:role/existing-reader"
    run = run_program("prod", extra={"meshserve:modelStore": json.dumps({**store, "roleArn": given})})
    assert not [r for r in run.registrations if r.type == "aws:iam/role:Role" and r.name == "cluster-model-reader"]
    accounts = [r for r in run.of_kind("ServiceAccount") if r.name.startswith("meshserve/")]
    assert accounts and all(
        a.inputs["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": given} for a in accounts
    )


def test_cluster_autoscaler_discovers_this_clusters_node_groups_with_a_scoped_role(run: Run) -> None:
    import json

    if run.stack != "prod":
        assert "cluster-autoscaler" not in releases(run)
        return
    values = releases(run)["cluster-autoscaler"].inputs["values"]
    (cluster,) = [r for r in run.registrations if r.type == "eks:index:Cluster"]
    assert values.get("cloudProvider", "aws") == "aws"  # the chart's default (tests/infra/test_upstream.py)
    assert values["awsRegion"] == "us-east-1"
    assert values["autoDiscovery"] == {"clusterName": cluster.inputs["name"]}
    account = values["rbac"]["serviceAccount"]
    assert account["annotations"] == {"eks.amazonaws.com/role-arn": role_arn("nodes-role")}
    role = next(r for r in run.registrations if r.type == "aws:iam/role:Role" and r.name == "nodes-role")
    trust = statement(role.inputs["assumeRolePolicy"])
    assert trust["Principal"] == {"Federated": OIDC_PROVIDER_ARN}
    subject = f"system:serviceaccount:kube-system:{account['name']}"
    assert trust["Condition"]["StringEquals"][f"{OIDC_ISSUER}:sub"] == subject
    (policy,) = [r for r in run.registrations if r.type == "aws:iam/rolePolicy:RolePolicy" and r.name == "nodes-role"]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    writes = [s for s in statements if "autoscaling:SetDesiredCapacity" in s["Action"]]
    assert writes == [s for s in statements if "Condition" in s]  # only the writes, each scoped to this cluster
    tag = f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster.inputs['name']}"
    assert all(s["Condition"] == {"StringEquals": {tag: "owned"}} for s in writes) and writes
    assert any("eks:DescribeNodegroup" in s["Action"] for s in statements)  # GPU pool scales from zero
    # Every pool can grow: the autoscaler has room between desired and max.
    groups = [r.inputs for r in run.registrations if r.type == "eks:index:ManagedNodeGroup"]
    assert len(groups) == 2
    for group in groups:
        assert group["scalingConfig"]["maxSize"] > group["scalingConfig"]["desiredSize"]
        # The autoscaler owns the desired size after creation: `pulumi up`/`--refresh` must not write it back.
        assert group["ignoreScalingChanges"] is True


def test_kong_traces_at_the_edge_when_logging_is_on(run: Run) -> None:
    plugins = run.of_kind("KongClusterPlugin")
    env = releases(run)["kong"].inputs["values"]["gateway"].get("env", {})
    if run.stack != "prod":  # no logging stack, no APM Server to send to
        assert plugins == [] and env == {}
        return
    (plugin,) = plugins
    assert env == {"tracing_instrumentations": "all", "tracing_sampling_rate": 1.0}
    secret = next(r for r in run.of_kind("Secret") if r.name == "kong/meshserve-kong-otlp")
    assert secret.urn in plugin.dependencies
    assert "config" not in plugin.inputs and "configPatches" not in plugin.inputs  # KIC 3.0: configFrom
    ref = plugin.inputs["configFrom"]["secretKeyRef"]
    assert f"{ref['namespace']}/{ref['name']}" == secret.name and ref["key"] in secret.inputs["stringData"]


# GPUs per instance for the GPU instance types the stacks use (AWS's instance type table).
GPUS_PER_INSTANCE = {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.12xlarge": 4, "g6.xlarge": 1, "p4d.24xlarge": 8}


def test_keda_never_asks_for_more_gpus_than_the_gpu_pool_can_have(run: Run) -> None:
    """Node autoscaling stops at the pool's maxSize: the GPU versions' KEDA ceilings must fit in it, or the
    extra pods stay Pending forever."""
    env = load_stack(run.stack, ROOT)
    scaled = {r.name.split("/", 1)[1]: r.inputs["spec"]["maxReplicaCount"] for r in run.of_kind("ScaledObject")}
    wanted = sum(
        scaled.get(f"{m}-v{v}", 0) * vs.gpus
        for m, ms in SPEC.models.items()
        for v, vs in ms.versions.items()
        if vs.device == "gpu"
    )
    if run.stack != "prod":
        assert wanted == 0  # dev: resnet-v1 has no replicas, nothing asks for a GPU
        return
    assert wanted > 0
    pool = env.cluster.gpu_pool
    assert wanted <= pool.max_size * GPUS_PER_INSTANCE[pool.instance_type], (wanted, pool)


# --------------------------------------------------------------------------- ordering


def test_custom_resources_depend_on_the_chart_that_brings_their_crds(run: Run) -> None:
    urns = {name: r.urn for name, r in releases(run).items()}
    checked = 0
    for r in k8s_objects(run):
        group = r.type.split(":")[1].split("/")[0]
        if group in CRD_CHARTS:
            assert urns[CRD_CHARTS[group]] in r.dependencies, f"{r.type} {r.name}"
            checked += 1
    assert checked >= 20


def waits_for(run: Run, r: Registration) -> set[str]:
    """Every URN `r` waits for, directly or through its dependencies."""
    by_urn, seen, todo = run.by_urn(), set(), list(r.dependencies)
    while todo:
        urn = todo.pop()
        if urn not in seen:
            seen.add(urn)
            todo += by_urn[urn].dependencies if urn in by_urn else []
    return seen


def test_workloads_wait_for_the_namespace_and_sidecar_injection(run: Run) -> None:
    istiod = releases(run)["istiod"].urn
    namespace = next(r.urn for r in run.of_kind("Namespace") if r.name == "meshserve")
    assert releases(run)["istio-base"].urn in releases(run)["istiod"].dependencies
    assert istiod in next(r for r in run.of_kind("Namespace") if r.name == "meshserve").dependencies
    for r in k8s_objects(run):
        if r.name.startswith("meshserve/"):
            assert namespace in waits_for(run, r), f"{r.type} {r.name}"
    for deployment in run.of_kind("Deployment"):
        assert istiod in deployment.dependencies


def test_scaled_objects_wait_for_their_deployment_and_prometheus(run: Run) -> None:
    deployments = {r.name: r.urn for r in run.of_kind("Deployment")}
    kps = releases(run)["kps"].urn
    for scaled in run.of_kind("ScaledObject"):
        assert deployments[scaled.name] in scaled.dependencies
        assert kps in scaled.dependencies


def test_grafana_secret_exists_before_the_chart_that_reads_it(run: Run) -> None:
    secret = next(r for r in run.of_kind("Secret") if r.name == "monitoring/grafana-admin")
    kps = releases(run)["kps"]
    assert secret.urn in kps.dependencies
    assert kps.inputs["values"]["grafana"]["admin"]["existingSecret"] == "grafana-admin"


# --------------------------------------------------------------------------- secrets


def plain_occurrences(raw: Any, needles: list[str], path: str = "") -> list[str]:
    """Paths where a needle appears outside a Pulumi secret envelope."""
    if isinstance(raw, dict):
        if raw.get(SECRET_SIG) == SECRET_VALUE:
            return []
        return [p for k, v in raw.items() for p in plain_occurrences(v, needles, f"{path}.{k}")]
    if isinstance(raw, list):
        return [p for i, v in enumerate(raw) for p in plain_occurrences(v, needles, f"{path}[{i}]")]
    if isinstance(raw, str) and any(n in raw for n in needles):
        return [path]
    return []


def test_the_leak_finder_finds_a_leak() -> None:
    raw = {"a": {SECRET_SIG: SECRET_VALUE, "value": SECRET_VALUES[0]}, "b": [f"x{SECRET_VALUES[1]}y"]}
    assert plain_occurrences(raw, SECRET_VALUES) == [".b[0]"]


def test_no_secret_in_plain_text_in_any_resource(run: Run) -> None:
    for r in run.registrations:
        assert plain_occurrences(r.raw, SECRET_VALUES) == [], f"{r.type} {r.name}"


def test_secrets_reach_only_their_secret_objects_and_stay_marked(run: Run) -> None:
    holders = {
        r.name: r.inputs["stringData"] for r in run.registrations if any(v in str(r.inputs) for v in SECRET_VALUES)
    }
    expected = {
        "meshserve/meshserve-demo-key": {"key": "demo-key-5f0c1e9a7b3d"},
        "monitoring/grafana-admin": {"admin-user": "admin", "admin-password": "grafana-pw-8e2d4c6a0f1b"},
    }
    if run.stack == "prod":
        expected["logging/meshserve-elastic-admin"] = {
            "username": "meshserve-admin",
            "password": "elastic-pw-3a9f7c1e5d2b",
            "roles": "superuser",
        }
        expected["logging/meshserve-apm-keystore"] = {"APM_SECRET_TOKEN": "apm-token-7c4e1a9f2b6d"}
        expected["meshserve/meshserve-otlp-headers"] = {"headers": "Authorization=Bearer%20apm-token-7c4e1a9f2b6d"}
        config = kong.tracing_config(load_stack("prod", ROOT), "apm-token-7c4e1a9f2b6d")
        expected["kong/meshserve-kong-otlp"] = {"config": config}
    assert holders == expected
    for r in run.of_kind("Secret"):
        assert r.raw["stringData"].get(SECRET_SIG) == SECRET_VALUE, r.name


def test_missing_secrets_fail_with_the_command_to_set_them() -> None:
    with pytest.raises(pulumi.RunError, match=r"missing secret config: meshserve:apiKeys .*pulumi config set --secret"):
        run_program("dev", secrets={"grafanaAdminPassword": "x"})


def test_logging_needs_the_apm_token() -> None:
    partial = {k: v for k, v in SECRETS.items() if k != "apmSecretToken"}
    with pytest.raises(pulumi.RunError, match=r"missing secret config: meshserve:apmSecretToken .*--secret"):
        run_program("prod", secrets=partial)


def test_pods_read_secrets_only_by_reference_to_secrets_that_exist_first(run: Run) -> None:
    """Every secretKeyRef names a Secret (and key) the program creates in the pod's namespace before the
    Deployment; no env var carries a literal secret; with logging on, every pod gets the OTLP headers."""
    secrets = {r.name: r for r in run.of_kind("Secret")}
    logging_on = load_stack(run.stack, ROOT).platform.logging
    for deployment in run.of_kind("Deployment"):
        ns = deployment.inputs["metadata"]["namespace"]
        env = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["env"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
        assert set(refs) == ({"OTEL_EXPORTER_OTLP_HEADERS"} if logging_on else set()), deployment.name
        for name, ref in refs.items():
            secret = secrets[f"{ns}/{ref['name']}"]
            assert ref["key"] in secret.inputs["stringData"], (deployment.name, name)
            assert secret.urn in waits_for(run, deployment), (deployment.name, secret.name)
            assert not any(e["name"] == name and "value" in e for e in env)


def test_apm_server_takes_its_token_from_a_keystore_secret_made_first(run: Run) -> None:
    if run.stack != "prod":
        assert not run.of_kind("ApmServer")
        return
    (apm,) = run.of_kind("ApmServer")
    ns = apm.inputs["metadata"]["namespace"]
    (keystore,) = apm.inputs["spec"]["secureSettings"]
    secret = next(r for r in run.of_kind("Secret") if r.name == f"{ns}/{keystore['secretName']}")
    assert secret.urn in apm.dependencies
    (entry,) = secret.inputs["stringData"]
    assert apm.inputs["spec"]["config"] == {"apm-server.auth.secret_token": "${" + entry + "}"}  # APM 8.x's key


def test_a_consumer_without_a_key_fails_naming_it() -> None:
    with pytest.raises(Exception, match=r"no API key for consumer 'demo'.*apiKeys.demo"):
        run_program("dev", secrets={"apiKeys": {"someone-else": "k"}, "grafanaAdminPassword": "x"})


# --------------------------------------------------------------------------- references


def pods(run: Run) -> list[tuple[str, dict[str, str]]]:
    return [
        (d.inputs["metadata"]["namespace"], d.inputs["spec"]["template"]["metadata"]["labels"])
        for d in run.of_kind("Deployment")
    ]


def selects(selector: dict[str, str], namespace: str, run: Run) -> bool:
    return any(ns == namespace and selector.items() <= labels.items() for ns, labels in pods(run))


def test_every_service_selects_some_deployments_pods(run: Run) -> None:
    services = [s for s in run.of_kind("Service") if s.inputs["metadata"]["namespace"] != "kong"]
    assert len(services) == 10  # 6 workloads, 2 model hosts, 2 `<model>-grpc` for Kong's gRPC routes
    for service in services:
        assert selects(service.inputs["spec"]["selector"], service.inputs["metadata"]["namespace"], run), service.name


def test_every_service_monitor_matches_a_service_and_a_named_port(run: Run) -> None:
    services = run.of_kind("Service")
    for monitor in run.of_kind("ServiceMonitor"):
        ns = monitor.inputs["metadata"]["namespace"]
        selector = monitor.inputs["spec"]["selector"]["matchLabels"]
        matched = [
            s
            for s in services
            if s.inputs["metadata"]["namespace"] == ns and selector.items() <= s.inputs["metadata"]["labels"].items()
        ]
        assert matched, monitor.name
        port_names = {p["name"] for s in matched for p in s.inputs["spec"]["ports"]}
        for endpoint in monitor.inputs["spec"]["endpoints"]:
            assert endpoint["port"] in port_names, monitor.name


def test_kong_sidecar_metrics_are_scraped_in_the_kong_namespace(run: Run) -> None:
    """The cluster-edge dashboard reads istio_requests_total{reporter="source"} from Kong's sidecar: a
    ServiceMonitor in the kong namespace scrapes the proxy pods' :15020, after the namespace exists."""
    (monitor,) = [m for m in run.of_kind("ServiceMonitor") if m.inputs["metadata"]["namespace"] == "kong"]
    (service,) = [s for s in run.of_kind("Service") if s.inputs["metadata"]["namespace"] == "kong"]
    assert service.inputs["spec"]["ports"][0]["targetPort"] == 15020
    assert monitor.inputs["spec"]["endpoints"][0]["path"] == "/stats/prometheus"
    # the Kong release `kong`, its proxy subchart `gateway` (chart labels: name = chart alias, instance = release)
    assert service.inputs["spec"]["selector"] == {
        "app.kubernetes.io/instance": "kong",
        "app.kubernetes.io/name": "gateway",
    }
    assert "kong" in releases(run)
    (namespace,) = [n for n in run.of_kind("Namespace") if n.name == "kong"]
    for r in (monitor, service):
        assert namespace.urn in waits_for(run, r)


def test_every_virtual_service_host_and_subset_exists(run: Run) -> None:
    services = {
        f"{s.inputs['metadata']['name']}.{s.inputs['metadata']['namespace']}.svc.cluster.local": s
        for s in run.of_kind("Service")
    }
    rules = {r.inputs["spec"]["host"]: r.inputs["spec"] for r in run.of_kind("DestinationRule")}
    virtual_services = run.of_kind("VirtualService")
    # digits, the pipeline API and its two stages; resnet too where a GPU serves it (dev sets resnet-v1: 0)
    assert len(virtual_services) == (5 if run.stack == "prod" else 4)
    for vs in virtual_services:
        for host in vs.inputs["spec"]["hosts"]:
            assert host in services, f"{vs.name}: no Service for host {host}"
        for route in vs.inputs["spec"]["http"]:
            destinations = [d["destination"] for d in route["route"]]
            destinations += [route["mirror"]] if "mirror" in route else []
            for destination in destinations:
                service = services[destination["host"]]
                if "subset" not in destination:
                    continue
                subsets = {s["name"]: s["labels"] for s in rules[destination["host"]].get("subsets", [])}
                assert destination["subset"] in subsets, f"{vs.name}: subset {destination['subset']} undefined"
                selector = {**service.inputs["spec"]["selector"], **subsets[destination["subset"]]}
                assert selects(selector, service.inputs["metadata"]["namespace"], run), f"{vs.name}: empty subset"


def test_every_ingress_backend_is_a_service_port_with_pods_behind_it(run: Run) -> None:
    """Both Ingresses (HTTP paths and the per-model gRPC hosts) name registered Services and ports that
    exist on them; a gRPC backend is Kong-proxied as gRPC and its container port is the model server's."""
    services = {s.name: s.inputs for s in run.of_kind("Service")}
    ingresses = {i.name: i.inputs for i in run.of_kind("Ingress")}
    assert set(ingresses) == {"meshserve/meshserve", "meshserve/meshserve-grpc"}
    for name, ingress in ingresses.items():
        ns = ingress["metadata"]["namespace"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = services[f"{ns}/{backend['name']}"]
                (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
                assert selects(service["spec"]["selector"], ns, run), f"{name}: {backend['name']} selects no pod"
                if name.endswith("-grpc"):
                    assert service["metadata"]["annotations"]["konghq.com/protocol"] == "grpc"
                    assert port["appProtocol"] == "grpc" and port["port"] == SPEC.grpc.port


def test_the_business_api_may_call_the_model_host_service(run: Run) -> None:
    """Mesh mode sends pipeline traffic to the plain `<model>` Service: the AuthorizationPolicy guarding the
    pods behind it lets the business API's service account in on any path."""
    api = next(d for d in run.of_kind("Deployment") if d.name == "meshserve/digits-classify")
    principal = f"cluster.local/ns/meshserve/sa/{api.inputs['spec']['template']['spec']['serviceAccountName']}"
    host = next(s for s in run.of_kind("Service") if s.name == "meshserve/digits")
    policies = [
        p
        for p in run.of_kind("AuthorizationPolicy")
        if p.inputs["spec"].get("selector", {}).get("matchLabels") == host.inputs["spec"]["selector"]
    ]
    assert policies, "no AuthorizationPolicy selects the digits pods"
    assert selects(host.inputs["spec"]["selector"], "meshserve", run)
    rules = [r for p in policies for r in p.inputs["spec"]["rules"]]
    assert any(principal in f["source"]["principals"] and "to" not in r for r in rules for f in r["from"])


def _integral(value: Any) -> Any:
    """Mocks hand numbers over as floats (2.0); the engine sends the API server integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def test_every_registered_builtin_object_passes_the_kubernetes_schemas(run: Run) -> None:
    """What the program registers (not only what mesh/compile returns: the Secrets, namespaces, the
    StorageClass), strict against Kubernetes 1.30: a field the API server does not know fails."""
    import kubernetes_validate

    groups = ("core", "apps", "policy", "networking.k8s.io", "rbac.authorization.k8s.io", "storage.k8s.io")
    checked = 0
    for r in k8s_objects(run):
        api = r.type.split(":")[1]
        if api.split("/")[0] in groups:
            obj = {**_integral(r.inputs), "apiVersion": api.removeprefix("core/"), "kind": r.kind}
            kubernetes_validate.validate(obj, "1.30.0", strict=True)
            checked += 1
    assert checked >= (45 if run.stack == "prod" else 35)
