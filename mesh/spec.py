"""The mesh spec: the single source of truth (`mesh/mesh.yaml`) and its one loader.

Field names and meanings follow Istio (retries, outlier detection, connection pool, weighted
subsets, mirroring) and Kong (key-auth consumers, rate-limiting windows), so the compilers in
`mesh/` map them one to one and the embedded gateway enforces the same semantics locally.
Validation errors name the field and say how to fix it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML

DEFAULT_SPEC_PATH = Path(__file__).with_name("mesh.yaml")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# --------------------------------------------------------------------------- value types


def parse_duration(value: Any) -> float:
    """Istio-style duration ("250ms", "2s", "1.5m") or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string like '250ms' or '2s', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration: write it like '250ms', '2s', '1m' or '1h'")
        seconds = float(match["value"]) * _UNIT_SECONDS[match["unit"]]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact Istio/Envoy duration string ("500ms", "2s")."""
    millis = round(seconds * 1000, 3)
    if millis % 1000 == 0:
        return f"{int(millis // 1000)}s"
    if float(millis).is_integer():
        return f"{int(millis)}ms"
    return f"{seconds:.6f}".rstrip("0") + "s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
Percent = Annotated[float, Field(ge=0, le=100)]


def _dns_label(value: str) -> str:
    if not DNS_LABEL.match(value) or len(value) > 63:
        raise ValueError(
            f"{value!r} must be a DNS label (lowercase letters, digits and '-', at most 63 characters):"
            " it becomes a Kubernetes Service name"
        )
    return value


Name = Annotated[str, AfterValidator(_dns_label)]


MAX_VERSION_DIGITS = 9


def parse_version(value: Any) -> int:
    """Versions are repository directory numbers; accept 2, "2" and "v2"."""
    text = str(value).strip()
    if text.lower().startswith("v"):
        text = text[1:]
    # Bounded before int(): 5,000 digits would hit Python's int-conversion limit (and echo back whole).
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_VERSION_DIGITS or int(text) < 1:
        shown = repr(value) if len(str(value)) <= 32 else f"{str(value)[:32]!r}... ({len(str(value))} characters)"
        raise ValueError(
            f"{shown} is not a model version: versions are positive integers like 1 or v1, "
            f"at most {MAX_VERSION_DIGITS} digits"
        )
    return int(text)


Version = Annotated[int, BeforeValidator(parse_version)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- models


class Resources(Strict):
    """Kubernetes resource requests/limits; `nvidia.com/gpu` is added for GPU versions."""

    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "500m", "memory": "512Mi"})
    limits: dict[str, str] = Field(default_factory=lambda: {"cpu": "1", "memory": "1Gi"})


# A GPU server's host side holds the CUDA context, cuDNN/cuBLAS and onnxruntime-gpu: well over the
# CPU default's 1 GiB before the first request, so GPU versions get their own defaults.
GPU_RESOURCES = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}


class VersionSpec(Strict):
    replicas: int = Field(1, ge=0, description="server processes (pods) serving this version")
    device: Literal["cpu", "gpu"] = "cpu"
    gpus: int = Field(1, ge=1, description="GPUs per replica when device is gpu")
    cpu_fallback: bool = Field(
        False,
        description="device gpu only: on a cluster, serve on the CPU when no GPU provider loads instead of "
        "refusing readiness (the local stack always falls back, and says so)",
    )
    resources: Resources = Field(default_factory=Resources, description="defaults depend on the device")

    @model_validator(mode="before")
    @classmethod
    def _device_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("device") == "gpu" and "resources" not in data:
            return {**data, "resources": GPU_RESOURCES}
        return data


class Batching(Strict):
    """Overrides of the repository config.yaml's batching knobs (Triton's names)."""

    max_batch_size: int | None = Field(None, ge=0)
    max_queue_delay_microseconds: int | None = Field(None, ge=0)
    preferred_batch_size: list[int] | None = None
    instances: int | None = Field(None, ge=1, description="onnxruntime sessions per server")
    max_queue_size: int | None = Field(None, ge=1)

    def config_patch(self) -> dict[str, Any]:
        """The knobs that are set, as a partial config.yaml (Triton's shape) for `--config-override`."""
        patch: dict[str, Any] = {}
        if self.max_batch_size is not None:
            patch["max_batch_size"] = self.max_batch_size
        batching = {
            k: v
            for k, v in (
                ("max_queue_delay_microseconds", self.max_queue_delay_microseconds),
                ("preferred_batch_size", self.preferred_batch_size),
            )
            if v is not None
        }
        if batching:
            patch["dynamic_batching"] = batching
        if self.instances is not None:
            patch["instance_group"] = {"count": self.instances}
        if self.max_queue_size is not None:
            patch["default_queue_policy"] = {"max_queue_size": self.max_queue_size}
        return patch


class Mirror(Strict):
    version: Version
    percentage: Percent = 100.0


class Traffic(Strict):
    """Istio VirtualService semantics: weighted subsets, a header match first, mirroring."""

    weights: dict[Version, Annotated[int, Field(ge=0, le=100)]]
    stable: Version | None = Field(
        None, description="the version a rollback returns to (default: the lowest version with replicas)"
    )
    header: str = Field("x-model-version", min_length=1, description="a request carrying it goes to that version")
    mirror: Mirror | None = None

    @field_validator("weights")
    @classmethod
    def _sum_to_100(cls, weights: dict[int, int]) -> dict[int, int]:
        total = sum(weights.values())
        if total != 100:
            shown = ", ".join(f"v{v}={w}" for v, w in weights.items())
            raise ValueError(f"weights ({shown}) sum to {total}; they must sum to 100")
        return weights

    def routed_versions(self) -> list[int]:
        return [v for v, w in self.weights.items() if w > 0]


class Retries(Strict):
    attempts: int = Field(2, ge=0, description="retries after the first try (Istio retries.attempts)")
    per_try_timeout: Duration | None = Field(None, description="defaults to the overall timeout")
    retry_on: list[str] = Field(default_factory=lambda: ["connect-failure", "refused-stream", "5xx"])
    budget_percent: Percent = Field(
        20.0, description="Envoy's retry budget: retries at most this share of the active requests at once"
    )
    min_retry_concurrency: int = Field(3, ge=0, description="the retry budget never allows fewer retries than this")

    @field_validator("retry_on")
    @classmethod
    def _known_conditions(cls, conditions: list[str]) -> list[str]:
        known = {
            "5xx",
            "gateway-error",
            "reset",
            "connect-failure",
            "refused-stream",
            "retriable-status-codes",
            "unavailable",
            "deadline-exceeded",
        }
        unknown = [c for c in conditions if c not in known]
        if unknown:
            raise ValueError(f"unknown retry_on condition(s) {unknown}; use Envoy's: {sorted(known)}")
        return conditions


class OutlierDetection(Strict):
    consecutive_5xx_errors: int = Field(5, ge=0, description="0 disables ejection")
    interval: Duration = 10.0
    base_ejection_time: Duration = 30.0
    max_ejection_percent: Percent = 10.0


class ConnectionPool(Strict):
    max_connections: int = Field(1024, ge=1)
    max_pending_requests: int = Field(1024, ge=1, description="beyond this the gateway answers 503 at once")


class Resilience(Strict):
    timeout: Duration = 10.0
    retries: Retries = Field(default_factory=Retries)
    outlier_detection: OutlierDetection = Field(default_factory=OutlierDetection)
    connection_pool: ConnectionPool = Field(default_factory=ConnectionPool)

    @model_validator(mode="after")
    def _per_try_within_timeout(self) -> Resilience:
        per_try = self.retries.per_try_timeout
        if per_try is not None and per_try > self.timeout:
            raise ValueError(
                f"retries.per_try_timeout ({format_duration(per_try)}) is longer than timeout "
                f"({format_duration(self.timeout)}): lower it or raise the timeout"
            )
        return self


class ModelSpec(Strict):
    required: bool = True
    versions: dict[Version, VersionSpec]
    batching: Batching = Field(default_factory=Batching)
    traffic: Traffic | None = None
    resilience: Resilience = Field(default_factory=Resilience)

    @model_validator(mode="after")
    def _traffic_matches_versions(self) -> ModelSpec:
        if not self.versions:
            raise ValueError("a model needs at least one version")
        known = sorted(self.versions)
        traffic = self.traffic
        if traffic is None:
            return self
        for version in traffic.weights:
            if version not in self.versions:
                raise ValueError(
                    f"traffic.weights names v{version}, which is not under versions ({known}): "
                    "add the version or remove its weight"
                )
        for version in traffic.routed_versions():
            if self.versions[version].replicas < 1:
                raise ValueError(
                    f"traffic sends weight to v{version} but it has 0 replicas: give it replicas or set its weight to 0"
                )
        if traffic.stable is not None and self.versions.get(traffic.stable, VersionSpec(replicas=0)).replicas < 1:
            raise ValueError(
                f"traffic.stable is v{traffic.stable}, which is not a version with replicas ({known}): "
                "a rollback must land on a served version"
            )
        if traffic.mirror and traffic.mirror.version not in self.versions:
            raise ValueError(f"traffic.mirror.version v{traffic.mirror.version} is not under versions {known}")
        return self

    def serve_args(self, name: str, version: int) -> list[str]:
        """`meshserve serve` arguments that pin this version and apply the spec's batching overrides.

        The local supervisor and the Kubernetes compiler both call this, so a replica runs the same
        configuration on a laptop and in a pod.
        """
        args = ["--model", f"{name}:{version}"]
        patch = self.batching.config_patch()
        if patch:
            args += ["--config-override", f"{name}={json.dumps(patch, separators=(',', ':'), sort_keys=True)}"]
        return args

    def stable_version(self) -> int:
        """Where a rollback lands: `traffic.stable`, else the lowest version with replicas."""
        if self.traffic is not None and self.traffic.stable is not None:
            return self.traffic.stable
        served = [v for v, s in self.versions.items() if s.replicas > 0]
        return min(served) if served else min(self.versions)

    def weights(self) -> dict[int, int]:
        """Version weights; a single-version model with no traffic block takes everything."""
        if self.traffic is not None:
            return {v: self.traffic.weights.get(v, 0) for v in self.versions}
        served = [v for v, s in self.versions.items() if s.replicas > 0]
        return {v: (100 if served and v == max(served) else 0) for v in self.versions}


# --------------------------------------------------------------------------- pipelines

STAGE_KINDS = ("image-preprocess", "classification-postprocess")


class Stage(Strict):
    """One pipeline stage: a model (served by model servers) or a stage service of a known kind."""

    name: Name
    kind: Literal["image-preprocess", "classification-postprocess"] | None = None
    model: str | None = None
    replicas: int = Field(1, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _kind_or_model(self) -> Stage:
        if (self.kind is None) == (self.model is None):
            raise ValueError(f"stage {self.name!r} needs exactly one of `kind` ({list(STAGE_KINDS)}) or `model`")
        return self


class Pipeline(Strict):
    route: str = Field(description="the business endpoint at the gateway, e.g. /v1/digits:classify")
    replicas: int = Field(1, ge=1, description="business API processes")
    stages: list[Stage]
    resilience: Resilience = Field(default_factory=Resilience)

    @field_validator("route")
    @classmethod
    def _absolute(cls, route: str) -> str:
        if not route.startswith("/") or route.startswith("/v2/"):
            raise ValueError(f"route {route!r} must start with '/' and not with /v2/ (reserved for models)")
        return route

    def model_stage(self) -> Stage:
        return next(s for s in self.stages if s.model is not None)


# --------------------------------------------------------------------------- gateway


class SecretRef(Strict):
    """Where a key comes from: an env var locally, a Kubernetes Secret (a Pulumi secret) on a cluster."""

    env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    secret: str | None = Field(None, description="Kubernetes Secret name (created from a Pulumi secret)")
    key: str = "key"

    @model_validator(mode="after")
    def _somewhere(self) -> SecretRef:
        if not self.env and not self.secret:
            raise ValueError("api_key needs `env: VAR_NAME` and/or `secret: secret-name`")
        return self


def _no_inline_key(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "API keys are never written inline: use `api_key: {env: MESHSERVE_API_KEY, secret: <k8s-secret>}`"
        )
    return value


class RateLimit(Strict):
    """Kong rate-limiting windows, per consumer."""

    second: int | None = Field(None, ge=1)
    minute: int | None = Field(None, ge=1)
    hour: int | None = Field(None, ge=1)
    day: int | None = Field(None, ge=1)

    def windows(self) -> dict[str, int]:
        return self.model_dump(exclude_none=True)


class Consumer(Strict):
    username: Name
    api_key: Annotated[SecretRef, BeforeValidator(_no_inline_key)]
    rate_limit: RateLimit | None = None


class Gateway(Strict):
    port: int = Field(8080, ge=1, le=65535, description="the embedded gateway's port locally")
    key_names: list[str] = Field(default_factory=lambda: ["apikey", "x-api-key"])
    hide_credentials: bool = True
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(second=1000))
    consumers: list[Consumer] = Field(default_factory=list)
    allow_empty: bool = Field(
        False,
        description="apply a live reload that leaves no consumer or no route even while traffic flows "
        "(without it the embedded gateway keeps the previous spec: services/gateway/reload.py)",
    )

    @model_validator(mode="after")
    def _consumers_distinct(self) -> Gateway:
        """Each consumer is one identity with its own key: a shared name or key source would merge two."""
        for what, values in (
            ("username", [c.username for c in self.consumers]),
            ("api_key.env", [c.api_key.env for c in self.consumers if c.api_key.env]),
            ("api_key.secret", [c.api_key.secret for c in self.consumers if c.api_key.secret]),
        ):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"consumers: {what} {repeated} appears more than once; give each consumer its own")
        return self

    def limits_for(self, consumer: Consumer) -> dict[str, int]:
        return (consumer.rate_limit or self.rate_limit).windows()


# --------------------------------------------------------------------------- SLOs


class SLO(Strict):
    route: str = Field(description="a pipeline route or /v2/models/<model>/infer")
    p95_latency: Duration
    p99_latency: Duration
    error_budget: float = Field(0.01, gt=0, lt=1, description="allowed error ratio (1 - availability)")
    min_throughput: float = Field(0, ge=0, description="requests/s the route must sustain under load tests")
    window: Duration = 30 * 24 * 3600.0

    @model_validator(mode="after")
    def _ordered(self) -> SLO:
        if self.p95_latency > self.p99_latency:
            raise ValueError("p95_latency is above p99_latency: p95 must be the smaller bound")
        return self


# --------------------------------------------------------------------------- the mesh


class Grpc(Strict):
    """v2 gRPC on every model server, beside HTTP (tritonclient.grpc, KServe's gRPC client, perf_analyzer)."""

    enabled: bool = True
    port: int = Field(9000, ge=1, le=65535, description="the model servers' gRPC container port on Kubernetes")
    max_message_bytes: int | None = Field(
        None, ge=4 * 1024 * 1024, description="largest gRPC message; default: the HTTP body limit (64 MiB)"
    )
    gateway_port: int = Field(
        8081, ge=0, le=65535, description="the embedded gateway's gRPC port locally (0: no gRPC at the gateway)"
    )

    def serve_args(self, port: int) -> list[str]:
        """`meshserve serve` arguments for a replica listening for gRPC on `port` (none when disabled)."""
        if not self.enabled:
            return []
        args = ["--grpc-port", str(port)]
        if self.max_message_bytes is not None:
            args += ["--grpc-max-message-bytes", str(self.max_message_bytes)]
        return args


class MeshSpec(Strict):
    name: Name = "meshserve"
    namespace: Name = "meshserve"
    repository: str = Field("../models", description="model repository, relative to this file")
    models: dict[Name, ModelSpec]
    pipelines: dict[Name, Pipeline] = Field(default_factory=dict)
    gateway: Gateway = Field(default_factory=Gateway)
    grpc: Grpc = Field(default_factory=Grpc)
    slos: list[SLO] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> MeshSpec:
        for pname, pipeline in self.pipelines.items():
            names = [s.name for s in pipeline.stages]
            if len(set(names)) != len(names):
                raise ValueError(f"pipelines.{pname}.stages: stage names repeat ({names}); make them unique")
            models = [s for s in pipeline.stages if s.model is not None]
            if len(models) != 1:
                raise ValueError(f"pipelines.{pname}.stages: exactly one stage must name a `model`")
            if models[0].model not in self.models:
                raise ValueError(
                    f"pipelines.{pname}.stages.{models[0].name}: model {models[0].model!r} does not exist; "
                    f"known models: {sorted(self.models)}"
                )
        routes = {p.route for p in self.pipelines.values()}
        if len(routes) != len(self.pipelines):
            taken: dict[str, str] = {}
            for pname, pipeline in self.pipelines.items():
                if pipeline.route in taken:
                    raise ValueError(
                        f"pipelines.{pname}.route: {pipeline.route} is already the route of pipelines."
                        f"{taken[pipeline.route]}; give each pipeline its own route"
                    )
                taken[pipeline.route] = pname
        for slo in self.slos:
            if slo.route not in routes and not _is_model_route(slo.route, self.models):
                raise ValueError(
                    f"slos: route {slo.route!r} is neither a pipeline route ({sorted(routes)}) nor "
                    "/v2/models/<model>/infer of a known model"
                )
        base_dir = (info.context or {}).get("base_dir")
        if base_dir is not None:
            self._check_repository(Path(base_dir))
        return self

    def _check_repository(self, base_dir: Path) -> None:
        repo = self.repository_path(base_dir)
        if not repo.is_dir():
            raise ValueError(f"repository: {repo} is not a directory; point `repository` at the model repository")
        for name, model in self.models.items():
            for version in model.versions:
                if not (repo / name / str(version) / "model.onnx").is_file():
                    raise ValueError(
                        f"models.{name}.versions: v{version} is not in the model repository "
                        f"(no {repo / name / str(version) / 'model.onnx'}); build it or remove the version"
                    )

    def repository_path(self, base_dir: Path) -> Path:
        return (base_dir / self.repository).resolve()

    def slo_for(self, route: str) -> SLO | None:
        return next((s for s in self.slos if s.route == route), None)

    def stage_services(self) -> Iterator[tuple[str, Pipeline, Stage]]:
        """Every non-model stage as (service name, pipeline, stage); service = '<pipeline>-<stage>'."""
        for pname, pipeline in self.pipelines.items():
            for stage in pipeline.stages:
                if stage.kind is not None:
                    yield f"{pname}-{stage.name}", pipeline, stage


def _is_model_route(route: str, models: dict[str, ModelSpec]) -> bool:
    parts = route.strip("/").split("/")
    return len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[2] in models and parts[3] == "infer"


# --------------------------------------------------------------------------- loading


class SpecError(ValueError):
    """A spec that does not validate; `str()` lists each problem as `field.path: what to fix`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source} is not a valid mesh spec:\n" + "\n".join(f"  - {p}" for p in problems))


def _describe(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field: remove it or check its spelling"
        problems.append(f"{where}: {message}")
    return problems


def validate_spec(data: Any, *, base_dir: Path | None = None, source: str = "<spec>") -> MeshSpec:
    """Validate an already-parsed document; with `base_dir`, versions are checked against the repository."""
    try:
        return MeshSpec.model_validate(data, context={"base_dir": base_dir} if base_dir else None)
    except ValidationError as exc:
        raise SpecError(source, _describe(exc)) from None


def validate_model(data: Any, name: str, *, source: str = "<spec>") -> ModelSpec:
    """One model's entry of an already-parsed document, by the spec's own model (its rules, e.g.
    `stable_version` and `weights`, for callers that edit the raw YAML: mesh/canary.py)."""
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [f"models.{name}.{p}" for p in _describe(exc)]) from None


def round_trip_yaml() -> YAML:
    """The YAML settings mesh.yaml is written with: dumping an unchanged document gives the same text."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long flow mappings
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def read_yaml(path: Path) -> Any:
    """Round-trip YAML (comments and order kept) so canary edits can write the file back."""
    with path.open() as handle:
        return round_trip_yaml().load(handle)


def load_spec(path: str | Path = DEFAULT_SPEC_PATH, *, check_repository: bool = True) -> MeshSpec:
    """The one spec loader: read, validate, and check versions against the model repository."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except FileNotFoundError:
        raise SpecError(str(path), ["file not found"]) from None
    except Exception as exc:  # ruamel raises many YAML error types
        raise SpecError(str(path), [f"not valid YAML: {exc}"]) from None
    return validate_spec(data, base_dir=path.parent if check_repository else None, source=str(path))
