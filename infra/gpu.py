"""GPU enablement: the NVIDIA device plugin (advertises `nvidia.com/gpu`) and the DCGM exporter
(GPU utilisation, memory, temperature for the gpu-dcgm dashboard), both only on GPU nodes."""

from __future__ import annotations

import pulumi

from infra import charts
from infra.objects import release
from mesh.compile.settings import Environment

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def node_affinity(selector: dict[str, str]) -> dict:
    """Replaces the device plugin chart's default affinity, which requires NFD/GFD labels
    (feature.node.kubernetes.io/pci-10de.present, nvidia.com/gpu.present) that EKS nodes lack unless
    labelled: Helm replaces lists, so this one term is the whole requirement."""
    expressions = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(selector.items())]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": expressions}]}
        }
    }


class Gpu(pulumi.ComponentResource):
    def __init__(
        self, name: str, env: Environment, monitoring: pulumi.Resource | None, opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__("meshserve:infra:Gpu", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        selector = dict(env.gpu_node_selector)
        placement = {"nodeSelector": selector, "tolerations": [GPU_TOLERATION], "affinity": node_affinity(selector)}
        c = charts.NVIDIA_DEVICE_PLUGIN
        self.device_plugin = release("nvidia-device-plugin", c.chart, c.version, c.repo, "nvidia", placement, child)
        c = charts.DCGM_EXPORTER
        # The chart's ServiceMonitor (on, every 15s, by default) needs prometheus-operator's CRDs.
        values = {**placement, **({} if monitoring is not None else {"serviceMonitor": {"enabled": False}})}
        deps = [self.device_plugin, *([monitoring] if monitoring is not None else [])]
        self.dcgm_exporter = release(
            "dcgm-exporter",
            c.chart,
            c.version,
            c.repo,
            "nvidia",
            values,
            pulumi.ResourceOptions(parent=self, depends_on=deps),
        )
        self.register_outputs({})
