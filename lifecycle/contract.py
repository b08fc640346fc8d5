"""A model's evaluation contract: `<model>/evaluation.yaml` beside its config.yaml.

It says what a candidate version is judged on (an evaluation data set that ships with the model, or
seeded inputs generated from the config's signature), the metric (accuracy against labels, or top-1
agreement with the stable version for a model without labels) and the gates a version must pass to be
published. Strict like config.yaml: an unknown key is an error, not a silently ignored gate.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONTRACT_FILE = "evaluation.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Generated(_Strict):
    """Inputs drawn from a seeded normal distribution, shaped by the config's input dims."""

    seed: int = 0
    count: int = Field(default=32, ge=1, le=4096)


class Data(_Strict):
    """Exactly one of `inputs` (tensor name -> .npy file, relative to the model folder) or `generate`."""

    inputs: dict[str, str] | None = None
    labels: str | None = None  # .npy of int class ids, needed by metric `accuracy`
    generate: Generated | None = None
    built_by: str = ""  # the committed script that produced the files

    @model_validator(mode="after")
    def _one_source(self) -> Data:
        if (self.inputs is None) == (self.generate is None):
            raise ValueError("data needs exactly one of `inputs` (files) or `generate` (seeded inputs)")
        if self.generate is not None and self.labels is not None:
            raise ValueError("generated inputs have no labels: use metric `agreement`")
        return self


class Gates(_Strict):
    """Every gate is optional; a missing one is not checked (and the report says so)."""

    min_metric: float | None = Field(default=None, ge=0, le=1)  # absolute floor of the metric
    max_drop: float | None = Field(default=None, ge=0, le=1)  # stable's metric - candidate's
    min_agreement: float | None = Field(default=None, ge=0, le=1)  # top-1 agreement with the stable version
    max_latency_ratio: float | None = Field(default=None, gt=0)  # batch-1 latency / the baseline's


class Contract(_Strict):
    metric: Literal["accuracy", "agreement"]
    output: str | None = None  # the output whose argmax is the prediction (default: the first)
    data: Data
    gates: Gates = Field(default_factory=Gates)
    quantization: Literal["static", "dynamic"] | None = None  # default: chosen from the graph's operators
    calibration_count: int = Field(default=128, ge=1)  # static INT8: evaluation inputs used to calibrate
    batch_sizes: list[int] | None = None  # measured; default 1, the preferred sizes and max_batch_size

    @model_validator(mode="after")
    def _labels_for_accuracy(self) -> Contract:
        if self.metric == "accuracy" and self.data.labels is None:
            raise ValueError("metric `accuracy` needs data.labels")
        return self


def parse_contract(text: str, source: str) -> Contract:
    """Parse and validate; ValueError naming `source` and every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is not valid YAML: {exc}") from None
    try:
        return Contract.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{source}: {problems}") from None
