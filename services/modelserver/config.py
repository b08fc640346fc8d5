"""config.yaml of one model (Triton's names, YAML, snake_case): parsed once per load, never per request.

The contract is described in services/modelserver/README.md; pydantic rejects unknown keys so a typo in a config
is a load failure with a message, not a silently ignored knob.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.common.datatypes import V2_TO_NUMPY

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.onnx"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def v2_datatype(value: str) -> str:
    """Triton's TYPE_FP32 / STRING spelling, or the v2 one, as the v2 datatype."""
    value = value.upper().removeprefix("TYPE_")
    value = {"STRING": "BYTES"}.get(value, value)
    if value not in V2_TO_NUMPY:
        raise ValueError(f"unknown data_type {value!r}; one of {sorted(V2_TO_NUMPY)}")
    return value


class TensorSpec(_Strict):
    name: str
    data_type: str
    dims: list[int]

    @field_validator("data_type")
    @classmethod
    def _known(cls, value: str) -> str:
        return v2_datatype(value)

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in value):
            raise ValueError(f"dims must be positive or -1 (variable), got {value}")
        return value


class DynamicBatching(_Strict):
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    preferred_batch_size: list[int] = Field(default_factory=list)

    @field_validator("preferred_batch_size")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v <= 0 for v in value):
            raise ValueError("preferred_batch_size entries must be positive")
        return sorted(set(value))


class QueuePolicy(_Strict):
    max_queue_size: int = Field(default=1024, ge=0)  # 0 = unbounded (Triton's meaning)
    default_timeout_microseconds: int = Field(default=0, ge=0)  # 0 = none
    allow_timeout_override: bool = True


class InstanceGroup(_Strict):
    count: int = Field(default=1, ge=1, le=64)
    kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"


class Optimization(_Strict):
    execution_accelerators: list[str] = Field(default_factory=lambda: ["cpu"])
    intra_op_num_threads: int = Field(default=0, ge=0)  # 0 = onnxruntime decides
    inter_op_num_threads: int = Field(default=0, ge=0)


class WarmupInput(_Strict):
    """One input of a warm-up sample (Triton's ModelWarmup.Input): zeros or random values."""

    data_type: str
    dims: list[int]
    zero_data: bool = False
    random_data: bool = False

    @field_validator("data_type")
    @classmethod
    def _known(cls, value: str) -> str:
        return v2_datatype(value)

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d < 1 for d in value):
            raise ValueError(f"warm-up dims must be positive (a concrete sample), got {value}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> WarmupInput:
        if self.zero_data == self.random_data:
            raise ValueError("a warm-up input takes exactly one of zero_data: true or random_data: true")
        return self


class ModelWarmup(_Strict):
    """Triton's model_warmup entry: `count` runs of one sample before the version serves. Without
    `inputs`, every input of the signature gets zeros (variable dims as 1)."""

    name: str
    batch_size: int = Field(default=1, ge=0)  # 0 for a model without a batch dimension (Triton's meaning)
    count: int = Field(default=1, ge=1, le=1000)
    inputs: dict[str, WarmupInput] | None = None


class _Latest(_Strict):
    num_versions: int = Field(default=1, ge=1)


class _Specific(_Strict):
    versions: list[int]


class VersionPolicy(_Strict):
    latest: _Latest | None = None
    all: dict | None = None
    specific: _Specific | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"version_policy takes exactly one of latest/all/specific, got {chosen}")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions this policy serves out of those present on disk (ascending)."""
        ordered = sorted(available)
        if self.all is not None:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific.versions)]
        latest = self.latest.num_versions if self.latest else 1
        return ordered[-latest:]


class ModelConfig(_Strict):
    name: str
    platform: Literal["onnxruntime_onnx"] = "onnxruntime_onnx"
    backend: Literal["onnxruntime"] | None = None
    max_batch_size: int = Field(default=0, ge=0)
    required: bool = True
    description: str = ""
    input: list[TensorSpec] = Field(default_factory=list)
    output: list[TensorSpec] = Field(default_factory=list)
    dynamic_batching: DynamicBatching | None = None
    default_queue_policy: QueuePolicy = Field(default_factory=QueuePolicy)
    instance_group: InstanceGroup = Field(default_factory=InstanceGroup)
    optimization: Optimization = Field(default_factory=Optimization)
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    model_warmup: list[ModelWarmup] = Field(default_factory=list)
    parameters: dict[str, str] = Field(default_factory=dict)

    @field_validator("parameters", mode="before")
    @classmethod
    def _stringify(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


def merge_config(base: dict, patch: dict) -> dict:
    """`patch` laid over `base`, mappings merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(model_dir: Path, override: dict | None = None) -> ModelConfig:
    """Read and validate `<model_dir>/config.yaml`, with `override` (a partial config) laid over it.

    Overrides come from the mesh spec (`--config-override`), so one repository serves every
    environment; they are validated exactly like the file, so a bad knob fails the load loudly.
    """
    path = model_dir / CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must be a mapping")
    if override:
        raw = merge_config(raw, override)
    raw.setdefault("name", model_dir.name)
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ValueError(f"{path}: {problems}") from None
    if config.name != model_dir.name:
        raise ValueError(f"{path}: name {config.name!r} must equal the folder name {model_dir.name!r}")
    return config
