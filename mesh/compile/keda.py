"""KEDA ScaledObjects: one per serving model version, scaled on the model server's queue depth.

Queue depth (`meshserve_inference_queue_depth`, requests waiting for a batch) is the signal Triton
users ask for: CPU says nothing about a GPU-bound server, and latency rises only after the queue
does. The spec's replicas are the floor; the stack's `autoscaling.maxFactor` sets the ceiling.
"""

from __future__ import annotations

from typing import Any

from mesh.compile.names import Workload, namespace, workloads
from mesh.compile.settings import Environment
from mesh.spec import MeshSpec
from services.common.metric_names import INFERENCE_QUEUE_DEPTH


def queue_depth_query(w: Workload, ns: str) -> str:
    return f'sum({INFERENCE_QUEUE_DEPTH}{{namespace="{ns}",model="{w.model}",version="{w.version}"}})'


def scaled_object(w: Workload, spec: MeshSpec, env: Environment) -> dict[str, Any]:
    ns = namespace(spec, env)
    scaling = env.autoscaling
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": w.name, "namespace": ns, "labels": w.labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
            "minReplicaCount": w.replicas,
            "maxReplicaCount": w.replicas * scaling.max_factor,
            "pollingInterval": scaling.polling_interval,
            "cooldownPeriod": scaling.cooldown_period,
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "queue-depth",
                    "metadata": {
                        "serverAddress": env.prometheus_url,
                        "query": queue_depth_query(w, ns),
                        "threshold": str(scaling.queue_depth_target),
                    },
                }
            ],
        },
    }


def compile_keda(spec: MeshSpec, env: Environment) -> list[dict[str, Any]]:
    from mesh.compile.k8s import autoscaled

    return [scaled_object(w, spec, env) for w in workloads(spec, env) if autoscaled(w, env)]
