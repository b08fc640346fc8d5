"""config.yaml parsing, version policies, execution-provider choice and the signature check (pure)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from services.modelserver.config import ModelConfig, VersionPolicy, load_config
from services.modelserver.runtime import choose_providers
from services.modelserver.signature import build_signature
from tests.services.modelserver.onnx_models import write_config


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({}, [7]),
        ({"latest": {"num_versions": 2}}, [3, 7]),
        ({"all": {}}, [1, 3, 7]),
        ({"specific": {"versions": [1, 2, 7]}}, [1, 7]),
    ],
)
def test_version_policy_selects(policy: dict, expected: list[int]) -> None:
    assert VersionPolicy.model_validate(policy).select([7, 1, 3]) == expected


def test_version_policy_takes_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        VersionPolicy.model_validate({"all": {}, "latest": {"num_versions": 1}})


def test_config_defaults_and_names(tmp_path: Path) -> None:
    write_config(tmp_path / "m", max_batch_size=8, input=[{"name": "x", "data_type": "TYPE_STRING", "dims": [-1]}])
    config = load_config(tmp_path / "m")
    assert config.input[0].data_type == "BYTES"
    assert config.required and config.dynamic_batching is None
    assert config.default_queue_policy.max_queue_size == 1024
    assert config.instance_group.count == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: other\n", "must equal the folder name"),
        ("max_batch_size: 4\nbatching: {}\n", "batching"),
        ("input: [{name: x, data_type: FLOAT, dims: [1]}]\n", "unknown data_type"),
        ("input: [{name: x, data_type: FP32, dims: [0]}]\n", "dims must be positive"),
        ("platform: tensorflow_savedmodel\n", "platform"),
        ("a: [\n", "not valid YAML"),
        ("- 1\n", "must be a mapping"),
    ],
)
def test_config_errors_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "m")


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing"):
        load_config(tmp_path)


def test_providers_keep_order_and_fall_back_to_cpu() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["cuda", "tensorrt", "cpu"], available) == [
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["tensorrt", "cuda"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers([], available) == ["CPUExecutionProvider"]


def _arg(name: str, type_: str, shape: list) -> SimpleNamespace:
    return SimpleNamespace(name=name, type=type_, shape=shape)


GRAPH_IN = [_arg("x", "tensor(float)", ["N", 3, None])]
GRAPH_OUT = [_arg("y", "tensor(int64)", ["N", 10])]


def _config(**fields: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "m", **fields})


def test_signature_from_graph_and_config() -> None:
    sig = build_signature(_config(max_batch_size=4), GRAPH_IN, GRAPH_OUT)
    assert sig.inputs["x"].shape == (-1, 3, -1) and sig.outputs["y"].datatype == "INT64"
    narrowed = build_signature(
        _config(max_batch_size=4, input=[{"name": "x", "data_type": "FP32", "dims": [3, 5]}]), GRAPH_IN, GRAPH_OUT
    )
    assert narrowed.inputs["x"].shape == (-1, 3, 5)


@pytest.mark.parametrize(
    ("fields", "graph_in", "message"),
    [
        ({"input": [{"name": "x", "data_type": "FP16", "dims": [3, 5]}]}, GRAPH_IN, "config says FP16"),
        ({"input": [{"name": "x", "data_type": "FP32", "dims": [4, 5]}]}, GRAPH_IN, "conflict"),
        ({"input": [{"name": "x", "data_type": "FP32", "dims": [3]}]}, GRAPH_IN, "rank"),
        ({"input": [{"name": "z", "data_type": "FP32", "dims": [3]}]}, GRAPH_IN, "not in the graph"),
        ({}, [_arg("x", "tensor(float)", [1, 3])], "fixes the first dimension"),
        ({}, [_arg("x", "tensor(complex64)", ["N"])], "cannot carry"),
    ],
)
def test_signature_conflicts_fail_the_load(fields: dict, graph_in: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_signature(_config(max_batch_size=4, **fields), graph_in, GRAPH_OUT)


def test_model_warmup_in_tritons_terms(tmp_path: Path) -> None:
    sample = {"data_type": "TYPE_FP32", "dims": [4], "random_data": True}
    write_config(tmp_path / "m", max_batch_size=8, model_warmup=[{"name": "r", "count": 2, "inputs": {"x": sample}}])
    (warm,) = load_config(tmp_path / "m").model_warmup
    assert (warm.name, warm.batch_size, warm.count) == ("r", 1, 2)
    assert warm.inputs["x"].data_type == "FP32" and warm.inputs["x"].random_data


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"data_type": "FP32", "dims": [4]}, "exactly one of zero_data"),
        ({"data_type": "FP32", "dims": [4], "zero_data": True, "random_data": True}, "exactly one of zero_data"),
        ({"data_type": "FP32", "dims": [-1], "zero_data": True}, "must be positive"),
        ({"data_type": "FLOAT", "dims": [4], "zero_data": True}, "unknown data_type"),
        ({"data_type": "FP32", "dims": [4], "input_data_file": "x.bin"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_warmup_sample_is_a_config_error(tmp_path: Path, sample: dict, message: str) -> None:
    write_config(tmp_path / "m", model_warmup=[{"name": "w", "inputs": {"x": sample}}])
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "m")
