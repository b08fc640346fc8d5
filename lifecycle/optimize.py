"""INT8 quantization with onnxruntime.quantization, published through the same gates as any version.

Static QDQ for convolutional graphs: convolutions dominate their time and their activation ranges
are stable across inputs, so fixed scales calibrated on the evaluation data (per-channel weights)
let onnxruntime run integer kernels end to end. Dynamic for transformer-style graphs (MatMul-heavy,
no Conv): activation ranges vary from input to input (sequence length, attention), so weights are
quantized ahead of time and activations per batch at run time, which needs no calibration.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lifecycle.contract import Contract
from lifecycle.evaluate import EvalData


@dataclass(frozen=True)
class Plan:
    method: str  # "static" | "dynamic"
    why: str


def choose(model_bytes: bytes, contract: Contract) -> Plan:
    """The contract's choice if it makes one, else by the graph's operators (explained)."""
    import onnx

    ops = Counter(node.op_type for node in onnx.load_from_string(model_bytes).graph.node)
    counts = f"{ops.get('Conv', 0)} Conv, {ops.get('MatMul', 0)} MatMul, {ops.get('Attention', 0)} Attention nodes"
    if contract.quantization:
        return Plan(contract.quantization, f"{contract.quantization}: set by the model's evaluation.yaml ({counts})")
    if ops.get("Conv", 0) > 0:
        return Plan(
            "static",
            f"static QDQ (uint8 activations, int8 weights): a convolutional graph ({counts}); activation ranges are "
            "calibrated once on the evaluation data, weights per channel",
        )
    return Plan(
        "dynamic",
        f"dynamic: a transformer-style graph ({counts}); weights are quantized ahead of time and activations "
        "per batch at run time, as their ranges vary with the input",
    )


class _Calibration:
    """onnxruntime's CalibrationDataReader over the first rows of the evaluation data, one row per read."""

    def __init__(self, data: EvalData, count: int) -> None:
        self._rows: Iterator[dict[str, np.ndarray]] = iter([data.rows(i, i + 1) for i in range(min(count, data.count))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._rows, None)

    def rewind(self) -> None:  # onnxruntime >= 1.17 may call it
        pass


def quantize(model_bytes: bytes, plan: Plan, data: EvalData, calibration_count: int) -> bytes:
    """INT8 model bytes: uint8 activations and int8 weights ("U8S8"), QDQ format for static.

    U8S8 is x86's fast integer path (the u8 x s8 dot products of AVX2/AVX-512 VNNI): on this project's
    AMD EPYC (VNNI) the half-width ResNet ran at 1.0x FP32's speed with int8 activations (S8S8) and at
    ~2.6x with U8S8, both QDQ, one thread.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="meshserve-int8-") as tmp:
        source, prepared, out = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(model_bytes)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if plan.method == "static":
            quantize_static(
                str(prepared),
                str(out),
                _Calibration(data, calibration_count),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
            )
        else:
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        return out.read_bytes()
