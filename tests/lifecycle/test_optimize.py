"""`meshserve model optimize --int8`: static QDQ for a convolutional graph (digits, calibrated on its
evaluation data) published through the same gates with its measured figures; dynamic for a
MatMul-only graph (the transformer-style case); an INT8 model slower than the gate allows is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from lifecycle import optimize
from lifecycle.contract import parse_contract
from lifecycle.evaluate import EvalData
from services.cli import main
from tests.lifecycle.helpers import make_repository, make_spec, snapshot


@pytest.mark.timeout(120)
def test_int8_digits_is_static_qdq_and_published_with_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repository(tmp_path)
    spec = make_spec(tmp_path, repo)
    assert main(["model", "optimize", "digits", "--from", "1", "--int8", "--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "static QDQ (uint8 activations, int8 weights): a convolutional graph (2 Conv" in out
    assert "published digits v3" in out
    model = onnx.load(str(repo / "digits" / "3" / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = yaml.safe_load((repo / "digits" / "3" / "metadata.yaml").read_text())
    assert meta["parent"] == 1 and meta["produced_by"]["how"] == "optimize: int8 static"
    assert meta["produced_by"]["calibration_rows"] == 128
    assert meta["size_bytes"] < meta["produced_by"]["source_size_bytes"] / 2, "INT8 weights are a quarter of FP32"
    # Accuracy on the held-out split, recomputed with plain onnxruntime.
    x = np.load(repo / "digits/evaluation/inputs.npy")
    y = np.load(repo / "digits/evaluation/labels.npy")
    top1 = ort.InferenceSession(str(repo / "digits/3/model.onnx")).run(["logits"], {"input": x})[0].argmax(1)
    assert meta["evaluation"]["value"] == pytest.approx(float((top1 == y).mean()))
    assert meta["evaluation"]["value"] >= 0.95 and meta["evaluation"]["passed"] is True
    assert meta["performance"]["baseline_version"] == 1


def test_int8_slower_than_the_gate_allows_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repository(tmp_path)
    spec = make_spec(tmp_path, repo)
    contract = repo / "digits" / "evaluation.yaml"
    contract.write_text(contract.read_text().replace("max_latency_ratio: 2.0", "max_latency_ratio: 0.001"))
    before = snapshot(repo)
    assert main(["model", "optimize", "digits", "--from", "1", "--int8", "--spec", str(spec)]) == 1
    assert "failed gate(s): batch-1 latency" in capsys.readouterr().err
    assert snapshot(repo) == before


def _matmul_model() -> bytes:
    """x[-1,16] -> MatMul -> Add -> Relu -> MatMul -> y[-1,4]: no convolution (a transformer's building block)."""
    rng = np.random.default_rng(0)
    w1, b1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((16, 32), (32,), (32, 4)))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def test_a_graph_without_convolutions_is_quantized_dynamically() -> None:
    contract = parse_contract("metric: agreement\ndata: {generate: {count: 8}}\n", "mlp")
    source = _matmul_model()
    plan = optimize.choose(source, contract)
    assert plan.method == "dynamic" and "transformer-style" in plan.why and "0 Conv, 2 MatMul" in plan.why
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    int8 = optimize.quantize(source, plan, EvalData({"x": x}, None, "test"), 8)
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops or "DynamicQuantizeLinear" in ops, ops
    fp32 = ort.InferenceSession(source).run(["y"], {"x": x})[0]
    q = ort.InferenceSession(int8).run(["y"], {"x": x})[0]
    assert (fp32.argmax(1) == q.argmax(1)).mean() >= 0.75
    forced = parse_contract("metric: agreement\ndata: {generate: {}}\nquantization: static\n", "mlp")
    assert optimize.choose(source, forced).method == "static", "the contract's choice wins"
