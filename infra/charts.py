"""Pinned Helm charts: (chart, version, repository). Upgrades are a reviewed one-line change here."""

from __future__ import annotations

from typing import NamedTuple


class Chart(NamedTuple):
    chart: str
    version: str
    repo: str


ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
ISTIO_BASE = Chart("base", "1.24.2", ISTIO_REPO)
ISTIOD = Chart("istiod", "1.24.2", ISTIO_REPO)
KONG = Chart("ingress", "0.10.0", "https://charts.konghq.com")
KUBE_PROMETHEUS_STACK = Chart("kube-prometheus-stack", "66.3.1", "https://prometheus-community.github.io/helm-charts")
ECK_OPERATOR = Chart("eck-operator", "2.15.0", "https://helm.elastic.co")
KEDA = Chart("keda", "2.16.1", "https://kedacore.github.io/charts")
NVIDIA_DEVICE_PLUGIN = Chart("nvidia-device-plugin", "0.17.0", "https://nvidia.github.io/k8s-device-plugin")
DCGM_EXPORTER = Chart("dcgm-exporter", "3.6.1", "https://nvidia.github.io/dcgm-exporter/helm-charts")
CLUSTER_AUTOSCALER = Chart("cluster-autoscaler", "9.43.2", "https://kubernetes.github.io/autoscaler")
