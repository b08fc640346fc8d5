"""Triton's model configuration and statistics extensions, in Triton's JSON shape.

perf_analyzer and tritonclient's `get_model_config` read it (max_batch_size, input/output with
`TYPE_*` data types and dims without the batch dimension, dynamic_batching, instance_group). It is
derived from what is actually served (config.yaml narrowed by the ONNX graph), so the same dict
answers `GET .../config` and, parsed into protobuf, gRPC `ModelConfig`.
"""

from __future__ import annotations

from services.common.errors import ProtocolError
from services.modelserver.config import ModelConfig
from services.modelserver.repository import Repository, ServingVersion
from services.modelserver.signature import TensorSig
from services.modelserver.stats import statistics


def data_type(datatype: str) -> str:
    """v2 datatype -> Triton config enum name (BYTES is TYPE_STRING there)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _dims(sig: TensorSig, max_batch: int) -> list[int]:
    return list(sig.shape[1:] if max_batch > 0 else sig.shape)


def _version_policy(config: ModelConfig) -> dict:
    policy = config.version_policy
    if policy.all is not None:
        return {"all": {}}
    if policy.specific is not None:
        return {"specific": {"versions": list(policy.specific.versions)}}
    return {"latest": {"num_versions": policy.latest.num_versions if policy.latest else 1}}


def model_config(serving: ServingVersion) -> dict:
    config = serving.config
    sig = serving.signature
    max_batch = config.max_batch_size
    queue = config.default_queue_policy
    doc: dict = {
        "name": serving.model,
        "platform": config.platform,
        "backend": config.backend or "onnxruntime",
        "version_policy": _version_policy(config),
        "max_batch_size": max_batch,
        "input": [
            {"name": t.name, "data_type": data_type(t.datatype), "format": "FORMAT_NONE", "dims": _dims(t, max_batch)}
            for t in sig.inputs.values()
        ],
        "output": [
            {"name": t.name, "data_type": data_type(t.datatype), "dims": _dims(t, max_batch), "label_filename": ""}
            for t in sig.outputs.values()
        ],
        "instance_group": [
            {
                "name": serving.model,
                "kind": config.instance_group.kind,
                "count": config.instance_group.count,
                "gpus": [],
            }
        ],
        "default_model_filename": "model.onnx",
        "parameters": {k: {"string_value": v} for k, v in config.parameters.items()},
    }
    if max_batch > 0 and config.dynamic_batching is not None:
        doc["dynamic_batching"] = {
            "preferred_batch_size": list(config.dynamic_batching.preferred_batch_size),
            "max_queue_delay_microseconds": config.dynamic_batching.max_queue_delay_microseconds,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": queue.default_timeout_microseconds,
                "allow_timeout_override": queue.allow_timeout_override,
                "max_queue_size": queue.max_queue_size,
            },
        }
    return doc


def model_statistics(repository: Repository, model: str | None, version: str | None) -> dict:
    """Triton's statistics extension: every serving version, one model's, or one version's."""
    if model is None:
        servings = [s for name in sorted(repository.models) for _, s in sorted(repository.models[name].serving.items())]
    elif version is None:
        if model not in repository.models:
            raise ProtocolError(404, f"unknown model {model!r}")
        servings = [s for _, s in sorted(repository.models[model].serving.items())]
    else:
        servings = [repository.get(model, version)]
    return {"model_stats": [statistics(s.model, s.name_version, s.metrics.stats) for s in servings]}
