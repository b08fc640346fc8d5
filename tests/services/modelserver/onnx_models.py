"""Tiny ONNX models and repository folders built in fixtures (onnx.helper), covering every v2 datatype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

# v2 datatype -> (ONNX element type, numpy dtype used by the tests)
DATATYPES: dict[str, tuple[int, type]] = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


def save(graph: onnx.GraphProto, path: Path) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def identity_all_types(path: Path, width: int = 3, skip: tuple[str, ...] = ()) -> bytes:
    """Inputs IN_<DT> [N, width] -> Identity -> OUT_<DT>, one pair per datatype (but `skip`)."""
    inputs, outputs, nodes = [], [], []
    for name, (elem, _) in DATATYPES.items():
        if name in skip:
            continue
        inputs.append(helper.make_tensor_value_info(f"IN_{name}", elem, ["N", width]))
        outputs.append(helper.make_tensor_value_info(f"OUT_{name}", elem, ["N", width]))
        nodes.append(helper.make_node("Identity", [f"IN_{name}"], [f"OUT_{name}"]))
    return save(helper.make_graph(nodes, "identity_all", inputs, outputs), path)


def affine(path: Path, seed: int, features: int = 4, classes: int = 3) -> bytes:
    """x [N, features] FP32 -> y = x @ W + b [N, classes], relu = max(y, 0)."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((features, classes)).astype(np.float32)
    bias = rng.standard_normal(classes).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Relu", ["y"], ["relu"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", classes]),
        ],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    return save(graph, path)


def write_config(model_dir: Path, **config: object) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    config.setdefault("name", model_dir.name)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def fails_every_run(path: Path, features: int = 4, classes: int = 3) -> bytes:
    """Loads (the same signature as `affine`) but every inference fails: x [N, 4] is reshaped to
    [N, 3], which no N allows, so onnxruntime raises at run time, never at load."""
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "to"], ["y"]),
            helper.make_node("Relu", ["y"], ["relu"]),
        ],
        "fails_every_run",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", classes]),
        ],
        [numpy_helper.from_array(np.array([0, classes], np.int64), "to")],
    )
    return save(graph, path)
