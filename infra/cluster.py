"""The cluster: an existing one through a kubeconfig context (dev), or AWS EKS made by pulumi-eks with
a tainted GPU managed node group and a CPU node group for the platform (prod)."""

from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s

from mesh.compile.settings import Environment, NodePool

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)


class Cluster(pulumi.ComponentResource):
    provider: k8s.Provider

    def __init__(self, name: str, env: Environment, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("meshserve:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = env.cluster
        if settings.provider == "kubeconfig":
            self.provider = k8s.Provider(
                f"{name}-k8s", context=settings.context, kubeconfig=settings.kubeconfig, opts=child
            )
            self.register_outputs({})
            return
        import pulumi_aws as aws
        import pulumi_eks as eks

        role = aws.iam.Role(
            f"{name}-nodes",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                    ],
                }
            ),
            opts=child,
        )
        for i, arn in enumerate(NODE_POLICIES):
            aws.iam.RolePolicyAttachment(f"{name}-nodes-{i}", role=role.name, policy_arn=arn, opts=child)
        self.eks = eks.Cluster(
            name,
            version=settings.version,
            skip_default_node_group=True,
            instance_roles=[role],
            create_oidc_provider=True,  # IRSA: the model-sync init containers read S3 with a pod role
            opts=child,
        )

        def pool(pool_name: str, spec: NodePool, **extra) -> eks.ManagedNodeGroup:
            return eks.ManagedNodeGroup(
                f"{name}-{pool_name}",
                cluster=self.eks,
                node_role=role,
                instance_types=[spec.instance_type],
                disk_size=spec.disk_size_gb,
                scaling_config={
                    "min_size": spec.min_size,
                    "desired_size": spec.desired_size,
                    "max_size": spec.max_size,
                },
                labels={"meshserve.io/pool": pool_name},
                opts=child,
                **extra,
            )

        self.cpu_nodes = pool("cpu", settings.cpu_pool)
        # NVIDIA AMI (driver + container toolkit); the taint keeps everything but GPU pods off these nodes.
        self.gpu_nodes = pool("gpu", settings.gpu_pool, ami_type="AL2023_x86_64_NVIDIA", taints=[GPU_TAINT])
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.eks.kubeconfig.apply(lambda c: c if isinstance(c, str) else json.dumps(c)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cpu_nodes]),
        )
        self.register_outputs({"kubeconfig": pulumi.Output.secret(self.eks.kubeconfig)})
