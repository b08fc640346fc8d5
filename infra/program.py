"""The Pulumi program, composed like the architecture diagram: cluster, GPU, mesh, gateway, monitoring,
logging and tracing, autoscaling, workloads and traffic policies. Every object comes from mesh/compile;
this file only decides ordering (charts and their CRDs before the resources that need them)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.autoscaling import Autoscaling
from infra.cluster import Cluster
from infra.config import read_environment, read_secrets, spec_path
from infra.elastic import Logging
from infra.gateway import Gateway
from infra.gpu import Gpu
from infra.mesh import Mesh, TrafficPolicies
from infra.monitoring import Monitoring
from infra.nodes import NodeAutoscaling
from infra.workloads import Workloads
from mesh.compile import compile_all
from mesh.compile.k8s import with_role_arn
from mesh.spec import load_spec


@dataclass
class Stack:
    cluster: Cluster
    mesh: Mesh
    workloads: Workloads
    traffic: TrafficPolicies | None
    gateway: Gateway | None
    monitoring: Monitoring | None
    logging: Logging | None
    autoscaling: Autoscaling | None
    gpu: Gpu | None
    nodes: NodeAutoscaling | None


def main() -> Stack:
    env = read_environment()
    secrets = read_secrets(env)
    spec = load_spec(spec_path())
    groups = compile_all(spec, env)

    core = groups["core"]
    namespace = next(o for o in core if o["kind"] == "Namespace")
    cluster = Cluster("cluster", env, namespace["metadata"]["name"])
    on_cluster = pulumi.ResourceOptions(providers=[cluster.provider])
    # IRSA for the model sync: config's modelStore.roleArn wins, else the role this stack makes (prod).
    reader_arn = env.model_store.role_arn or cluster.model_reader_arn
    if reader_arn is not None:
        core = [with_role_arn(o, reader_arn) if o["kind"] == "ServiceAccount" else o for o in core]
    mesh = Mesh("mesh", env, namespace, groups["istio"], on_cluster)
    gateway = (
        Gateway("gateway", spec, env, groups["kong"], secrets, mesh.ready, on_cluster) if env.platform.kong else None
    )
    # The Kong proxy's sidecar-metrics Service and ServiceMonitor live in the kong namespace (Gateway makes it).
    monitoring_after = [*mesh.ready, *([gateway.namespace] if gateway else [])]
    monitoring = (
        Monitoring(
            "monitoring", env, groups["monitoring"], secrets.grafana_admin_password, monitoring_after, on_cluster
        )
        if env.platform.monitoring
        else None
    )
    logging = (
        Logging(
            "logging",
            env,
            groups["logging"],
            secrets.elastic_password,
            secrets.apm_token,
            namespace["metadata"]["name"],
            mesh.ready,
            cluster.storage,
            on_cluster,
        )
        if env.platform.logging
        else None
    )
    gpu = Gpu("gpu", env, monitoring.chart if monitoring else None, on_cluster) if env.platform.gpu else None
    pods_need = [*mesh.ready, *(logging.workload_secrets if logging else [])]  # the OTLP headers Secret
    workloads = Workloads("workloads", [o for o in core if o is not namespace], pods_need, on_cluster)
    traffic = TrafficPolicies("traffic", mesh, groups["istio"], on_cluster) if env.platform.istio else None
    autoscaling = None
    if env.platform.keda:
        ready = [*workloads.deployments, *([monitoring.chart] if monitoring else [])]
        autoscaling = Autoscaling("autoscaling", groups["keda"], ready, on_cluster)

    pulumi.export("namespace", namespace["metadata"]["name"])
    pulumi.export("domain", env.domain)
    # KEDA adds pods; on EKS cluster-autoscaler adds the nodes they need, up to each pool's maxSize.
    nodes = (
        NodeAutoscaling("nodes", cluster.cluster_name, env.cluster.version, cluster.oidc, on_cluster)
        if env.cluster.provider == "eks"
        else None
    )
    return Stack(cluster, mesh, workloads, traffic, gateway, monitoring, logging, autoscaling, gpu, nodes)
