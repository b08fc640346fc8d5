"""Node autoscaling on EKS: cluster-autoscaler, so the pods KEDA adds (mesh/compile/keda.py) get nodes.

It finds the managed node groups' Auto Scaling groups by the tags EKS puts on them
(`k8s.io/cluster-autoscaler/enabled`, `k8s.io/cluster-autoscaler/<cluster>`), and reads each group's
labels and taints through `eks:DescribeNodegroup`, so the GPU pool can scale from zero for a pending GPU
pod. Its IRSA role may change only groups tagged for this cluster. The pools' `maxSize` stays the ceiling.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi

from infra import charts, irsa
from infra.objects import release

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"
# cluster-autoscaler's image per Kubernetes minor: the project supports only the control plane's own minor
# (chart 9.43.2 defaults to v1.31.0 whatever the cluster). A new cluster version adds a line here.
AUTOSCALER_IMAGE_TAGS = {"1.29": "v1.29.3", "1.30": "v1.30.1", "1.31": "v1.31.0"}


def autoscaler_image_tag(kubernetes_version: str) -> str:
    if kubernetes_version not in AUTOSCALER_IMAGE_TAGS:
        raise pulumi.RunError(
            f"no cluster-autoscaler image known for Kubernetes {kubernetes_version}: add its release to "
            f"AUTOSCALER_IMAGE_TAGS in infra/nodes.py (known: {', '.join(sorted(AUTOSCALER_IMAGE_TAGS))})"
        )
    return AUTOSCALER_IMAGE_TAGS[kubernetes_version]


def autoscaler_policy(cluster_name: str) -> str:
    """AWS's documented least-privilege policy for cluster-autoscaler with auto-discovery."""
    read = {
        "Effect": "Allow",
        "Action": [
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations",
            "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeTags",
            "ec2:DescribeImages",
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:GetInstanceTypesFromInstanceRequirements",
            "eks:DescribeNodegroup",
        ],
        "Resource": "*",
    }
    write = {
        "Effect": "Allow",
        "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
        "Resource": "*",
        "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [read, write]}, sort_keys=True)


def autoscaler_values(cluster_name: str, region: str | None, role_arn: Any, kubernetes_version: str) -> dict[str, Any]:
    """Only what differs from the chart's defaults (cloudProvider aws and a created ServiceAccount are)."""
    return {
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "image": {"tag": autoscaler_image_tag(kubernetes_version)},
        "rbac": {
            "serviceAccount": {
                "name": SERVICE_ACCOUNT,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            }
        },
        # The platform's pools differ (CPU vs GPU): expand the cheapest group that fits the pending pod.
        "extraArgs": {
            "expander": "least-waste",
            "balance-similar-node-groups": True,
            "skip-nodes-with-system-pods": False,
        },
        "nodeSelector": {"meshserve.io/pool": "cpu"},
    }


class NodeAutoscaling(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cluster_name: str,
        kubernetes_version: str,
        oidc: tuple[pulumi.Input[str], pulumi.Input[str]],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("meshserve:infra:NodeAutoscaling", name, None, opts)
        import pulumi_aws as aws

        aws_child = pulumi.ResourceOptions(parent=self)
        subject = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
        role = irsa.irsa_role(f"{name}-role", *oidc, subject, aws_child)
        policy = aws.iam.RolePolicy(
            f"{name}-role", role=role.id, policy=autoscaler_policy(cluster_name), opts=aws_child
        )
        c = charts.CLUSTER_AUTOSCALER
        values = autoscaler_values(cluster_name, pulumi.Config("aws").get("region"), role.arn, kubernetes_version)
        self.chart = release(
            "cluster-autoscaler",
            c.chart,
            c.version,
            c.repo,
            NAMESPACE,
            values,
            pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.register_outputs({})
