"""IAM roles for service accounts (IRSA): a role that pods assume through the cluster's OIDC provider.

Pure policy builders (testable without AWS) plus one helper that makes the role. The trust policy names
the OIDC provider this stack creates, so a role can never be trusted by another cluster's tokens.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi

EBS_CSI_SERVICE_ACCOUNT = "system:serviceaccount:kube-system:ebs-csi-controller-sa"
EBS_CSI_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"


def trust_policy(provider_arn: str, issuer: str, subject: str) -> str:
    """Web-identity trust for `subject` (`system:serviceaccount:<ns>:<sa>`, `*` allowed as the SA name)."""
    issuer = issuer.removeprefix("https://")
    test = "StringLike" if "*" in subject else "StringEquals"
    statement = {
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {test: {f"{issuer}:sub": subject, f"{issuer}:aud": "sts.amazonaws.com"}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, sort_keys=True)


def s3_read_policy(uri: str) -> str:
    """Read-only access to one prefix of one bucket: list it, get its objects (what `aws s3 sync` needs)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    listing: dict[str, Any] = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    statements = [listing, {"Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def irsa_role(
    name: str, provider_arn: pulumi.Input[str], issuer: pulumi.Input[str], subject: str, opts: pulumi.ResourceOptions
):
    import pulumi_aws as aws

    policy = pulumi.Output.all(provider_arn, issuer).apply(lambda a: trust_policy(a[0], a[1], subject))
    return aws.iam.Role(name, assume_role_policy=policy, opts=opts)
