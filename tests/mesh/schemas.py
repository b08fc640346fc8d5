"""Offline schema checks for generated objects: Kubernetes 1.30 core schemas (kubernetes-validate,
strict: unknown fields fail) and the published CRD models (cloudcoil, extra="forbid")."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from cloudcoil.models.istio.networking.v1 import DestinationRule, VirtualService
from cloudcoil.models.istio.security.v1 import AuthorizationPolicy, PeerAuthentication
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

K8S_VERSIONS = ("1.30.0", "1.33.0")
CRD_MODELS = {
    ("networking.istio.io/v1", "VirtualService"): VirtualService,
    ("networking.istio.io/v1", "DestinationRule"): DestinationRule,
    ("security.istio.io/v1", "PeerAuthentication"): PeerAuthentication,
    ("security.istio.io/v1", "AuthorizationPolicy"): AuthorizationPolicy,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PrometheusRule,
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
}
BUILTIN_GROUPS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1"}


def is_builtin(obj: dict[str, Any]) -> bool:
    return obj["apiVersion"] in BUILTIN_GROUPS


def validate_builtin(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def validate_custom(obj: dict[str, Any]) -> None:
    model = CRD_MODELS[(obj["apiVersion"], obj["kind"])]
    model.model_validate(obj, extra="forbid")


def has_model(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CRD_MODELS


def validate(obj: dict[str, Any]) -> None:
    """Builtin or a CRD with a published model; anything else (Kong, ECK) is checked by its own tests."""
    if is_builtin(obj):
        validate_builtin(obj)
    elif has_model(obj):
        validate_custom(obj)
