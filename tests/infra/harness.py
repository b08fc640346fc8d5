"""Run the Pulumi program under mocks (no CLI, no cluster) and record every registration as the engine
would see it: type, name, parent, dependencies (URNs) and the serialized inputs, secrets still marked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import resource_pb2
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig
# Distinctive values, so a leak anywhere in a resource's inputs is found by a plain search.
SECRETS = {
    "apiKeys": {"demo": "demo-key-5f0c1e9a7b3d"},
    "grafanaAdminPassword": "grafana-pw-8e2d4c6a0f1b",
    "elasticPassword": "elastic-pw-3a9f7c1e5d2b",
    "apmSecretToken": "apm-token-7c4e1a9f2b6d",
}
SECRET_VALUES = [
    "demo-key-5f0c1e9a7b3d",
    "grafana-pw-8e2d4c6a0f1b",
    "elastic-pw-3a9f7c1e5d2b",
    "apm-token-7c4e1a9f2b6d",
]
OIDC_ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/MOCKED0IDC"
OIDC_PROVIDER_ARN = f"arn:aws:iam::123456789012:oidc-provider/{OIDC_ISSUER}"
EKS_KUBECONFIG = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "mock"}]}


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    dependencies: list[str]
    provider: str  # "<provider urn>::<id>" for custom resources
    inputs: dict[str, Any]  # secrets unwrapped
    raw: dict[str, Any] = field(repr=False)  # as serialized: secrets wrapped in the secret signature

    @property
    def kind(self) -> str:
        return self.type.rsplit(":", 1)[-1]


def role_arn(name: str) -> str:
    return f"arn:aws:iam::123456789012:role/{name}"


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "eks:index:Cluster":
            state["kubeconfig"] = EKS_KUBECONFIG  # a remote component: the mock supplies its outputs
            state["oidcProviderArn"] = OIDC_PROVIDER_ARN
            state["oidcIssuer"] = OIDC_ISSUER
        if args.typ == "aws:iam/role:Role":
            state["arn"] = role_arn(args.name)
            state["name"] = args.name
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def GetDeploymentInfo(self, request):
        """Resource references serialize as URNs here: rehydrating them (pulumi-eks passes the Cluster to
        its node groups) would start lookups on the mock monitor's own event loop, which the runtime
        cannot await."""
        info = super().GetDeploymentInfo(request)
        keep = [f for f in info.supportedFeatures if f != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES]
        return resource_pb2.DeploymentInfo(supportedFeatures=keep)

    def SupportsFeature(self, request):
        if request.id == "resourceReferences":
            return type("SupportsFeatureResponse", (object,), {"hasSupport": False})
        return super().SupportsFeature(request)

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object)
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=request.custom,
                    dependencies=list(request.dependencies),
                    provider=request.provider,
                    inputs=unwrap(raw),
                    raw=raw,
                )
            )
        return response


def unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return unwrap(value.get("value"))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def stack_config(stack: str) -> dict[str, str]:
    """Pulumi.<stack>.yaml's config as the engine hands it to a program: objects as JSON strings."""
    document = YAML(typ="safe").load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in document["config"].items()}


@dataclass
class Run:
    stack: str
    registrations: list[Registration]
    program: Any

    def of_kind(self, kind: str) -> list[Registration]:
        return [r for r in self.registrations if r.kind == kind]

    def by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.registrations}


def run_program(stack: str, secrets: dict[str, Any] | None = None, extra: dict[str, str] | None = None) -> Run:
    from infra import program

    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="meshserve", stack=stack, preview=False, monitor=monitor)
    secrets = SECRETS if secrets is None else secrets
    config = {**stack_config(stack), **(extra or {})}
    secret_config = {f"meshserve:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in secrets.items()}
    pulumi.runtime.set_all_config({**config, **secret_config}, secret_keys=list(secret_config))
    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def run():
        result["program"] = program.main()

    run()
    return Run(stack, monitor.registrations, result["program"])
