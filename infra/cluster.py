"""The cluster: an existing one through a kubeconfig context (dev), or AWS EKS made by pulumi-eks with
a tainted GPU managed node group and a CPU node group for the platform (prod).

On EKS this also makes what the platform needs from AWS: the EBS CSI driver add-on (its own IRSA role)
and a default gp3 StorageClass, so Elasticsearch's PVCs bind; and the model-sync role, read-only on the
model bucket and trusted by this stack's OIDC provider for the workload namespace's service accounts
(`model_reader_arn`; `modelStore.roleArn` in config overrides it)."""

from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s

from infra import irsa
from infra.objects import apply_object
from mesh.compile.settings import Environment, NodePool

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
# The NVIDIA device plugin chart's default affinity wants NFD/GFD labels; EKS GPU nodes get this one from us.
GPU_PRESENT_LABEL = {"nvidia.com/gpu.present": "true"}
STORAGE_CLASS = "gp3"
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)


def default_storage_class() -> dict:
    """gp3 through the EBS CSI driver, the cluster default; bound where the pod lands (one AZ per volume)."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true"},
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
        "reclaimPolicy": "Delete",
    }


class Cluster(pulumi.ComponentResource):
    """`storage`: what PVC owners wait for (prod: the default StorageClass); `model_reader_arn`: the
    IRSA role the model-sync init containers assume (prod with an s3 model store), else None."""

    provider: k8s.Provider
    storage: list[pulumi.Resource]
    model_reader_arn: pulumi.Output | None

    def __init__(
        self, name: str, env: Environment, workload_namespace: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("meshserve:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = env.cluster
        self.storage = []
        self.model_reader_arn = None
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
        self.cluster_name = f"meshserve-{pulumi.get_stack()}"
        self.eks = eks.Cluster(
            name,
            name=self.cluster_name,
            version=settings.version,
            skip_default_node_group=True,
            instance_roles=[role],
            create_oidc_provider=True,  # IRSA: the model-sync init containers read S3 with a pod role
            opts=child,
        )

        def pool(pool_name: str, spec: NodePool, extra_labels: dict[str, str] | None = None, **extra):
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
                labels={"meshserve.io/pool": pool_name, **(extra_labels or {})},
                # cluster-autoscaler (infra/nodes.py) owns the desired size after creation: without this,
                # every `pulumi up` (and `--refresh`) writes it back and removes the nodes it added.
                ignore_scaling_changes=True,
                opts=child,
                **extra,
            )

        self.cpu_nodes = pool("cpu", settings.cpu_pool)
        # NVIDIA AMI (driver + container toolkit); the taint keeps everything but GPU pods off these nodes.
        self.gpu_nodes = pool(
            "gpu",
            settings.gpu_pool,
            ami_type="AL2023_x86_64_NVIDIA",
            taints=[GPU_TAINT],
            extra_labels=GPU_PRESENT_LABEL,
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.eks.kubeconfig.apply(lambda c: c if isinstance(c, str) else json.dumps(c)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cpu_nodes]),
        )
        self.oidc = oidc = (self.eks.oidc_provider_arn, self.eks.oidc_issuer)
        nodes = [self.cpu_nodes, self.gpu_nodes]

        ebs_role = irsa.irsa_role(f"{name}-ebs-csi", *oidc, irsa.EBS_CSI_SERVICE_ACCOUNT, child)
        ebs_policy = aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi", role=ebs_role.name, policy_arn=irsa.EBS_CSI_POLICY, opts=child
        )
        self.ebs_csi = aws.eks.Addon(
            f"{name}-ebs-csi",
            cluster_name=self.cluster_name,
            addon_name="aws-ebs-csi-driver",
            service_account_role_arn=ebs_role.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.eks, ebs_policy, *nodes]),
        )
        self.storage = [
            apply_object(
                default_storage_class(),
                pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[self.ebs_csi]),
            )
        ]

        store = env.model_store
        if store.type == "s3" and store.uri and not store.role_arn:
            subject = f"system:serviceaccount:{workload_namespace}:*"
            reader = irsa.irsa_role(f"{name}-model-reader", *oidc, subject, child)
            aws.iam.RolePolicy(
                f"{name}-model-reader", role=reader.id, policy=irsa.s3_read_policy(store.uri), opts=child
            )
            self.model_reader_arn = reader.arn
        self.register_outputs({"kubeconfig": pulumi.Output.secret(self.eks.kubeconfig)})
