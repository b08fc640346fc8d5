"""onnxruntime sessions of one model version: `instance_group.count` of them, run concurrently in a
thread pool (onnxruntime releases the GIL while it computes)."""

from __future__ import annotations

import logging
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from services.modelserver.config import ModelConfig
from services.modelserver.signature import Signature, build_signature

log = logging.getLogger(__name__)

PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU = "CPUExecutionProvider"


def choose_providers(accelerators: list[str], available: list[str]) -> list[str]:
    """Configured accelerators that this onnxruntime build offers, in order, CPU always last."""
    chosen: list[str] = []
    for name in accelerators:
        provider = PROVIDER_NAMES.get(name.lower(), name)
        if provider in available and provider != CPU and provider not in chosen:
            chosen.append(provider)
    return [*chosen, CPU]


def session_options(config: ModelConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = config.optimization.intra_op_num_threads
    options.inter_op_num_threads = config.optimization.inter_op_num_threads
    options.log_severity_level = 3  # onnxruntime's own warnings would bypass our JSON logs
    return options


class Runtime:
    """Loads the model bytes once (later file changes do not touch a serving version) into N sessions."""

    def __init__(self, model_bytes: bytes, config: ModelConfig, label: str) -> None:
        providers = choose_providers(config.optimization.execution_accelerators, ort.get_available_providers())
        options = session_options(config)
        count = config.instance_group.count
        self.sessions = [ort.InferenceSession(model_bytes, options, providers=providers) for _ in range(count)]
        first = self.sessions[0]
        self.providers: list[str] = first.get_providers()  # what really runs, not what was asked
        if config.instance_group.kind == "KIND_GPU" and self.providers == [CPU]:
            log.warning("%s asks for KIND_GPU but only the CPU provider is available", label)
        self.signature: Signature = build_signature(config, first.get_inputs(), first.get_outputs())
        self._free: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in self.sessions:
            self._free.put(session)
        self.executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix=f"ort-{label}")
        self.instances = count

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        """Runs on an executor thread; each call borrows a free session."""
        session = self._free.get()
        try:
            return session.run(output_names, feeds)
        finally:
            self._free.put(session)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.sessions.clear()
