"""onnxruntime sessions of one model version: `instance_group.count` of them, run concurrently in a
thread pool (onnxruntime releases the GIL while it computes).

`providers` is what the sessions really run on (`get_providers()`), not what was asked: onnxruntime-gpu
falls back to the CPU provider, with one log line, when the CUDA libraries it was built for are missing.
A server told `require_device="gpu"` (the Kubernetes workload of a `device: gpu` version) refuses such
a session instead of computing on the CPU of a node that holds a GPU for it.
"""

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
GPU_PROVIDERS = frozenset(
    {"TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider"}
)
# onnxruntime-gpu release -> the CUDA major its PyPI wheels are built for (their metadata: up to 1.26 they
# depend on nvidia-*-cu12, from 1.27.0 on nvidia-cuda-runtime~=13.0 and nvidia-cudnn-cu13). The GPU image's
# base (services/Dockerfile.gpu) must have the same major; tests/infra/test_images.py holds them together.
ORT_GPU_CUDA_MAJOR: tuple[tuple[tuple[int, int], int], ...] = (((1, 20), 12), ((1, 27), 13))


def cuda_major_for(ort_version: str) -> int | None:
    """The CUDA major an onnxruntime-gpu version's wheels need (None before the first table entry)."""
    major, minor = (int(p) for p in ort_version.split(".")[:2])
    found = None
    for since, cuda in ORT_GPU_CUDA_MAJOR:
        if (major, minor) >= since:
            found = cuda
    return found


class DeviceUnavailable(RuntimeError):
    """A device was required and only other providers loaded (the load fails with this message)."""


def device_of(providers: list[str]) -> str:
    """`gpu` when any GPU provider runs the session, else `cpu`."""
    return "gpu" if GPU_PROVIDERS.intersection(providers) else "cpu"


def check_device(label: str, required: str | None, asked: list[str], providers: list[str]) -> None:
    if required == "gpu" and device_of(providers) != "gpu":
        cuda = cuda_major_for(ort.__version__)
        raise DeviceUnavailable(
            f"{label} must run on a GPU (--require-device gpu) but onnxruntime {ort.__version__} loaded only "
            f"{providers} (asked for {asked}; this build offers {ort.get_available_providers()}). "
            + (f"onnxruntime-gpu {ort.__version__} needs CUDA {cuda}; " if cuda else "")
            + "check the image's CUDA/cuDNN, the NVIDIA driver and the config's execution_accelerators, "
            "or allow the CPU with `cpu_fallback: true` on the version in the mesh spec"
        )


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

    def __init__(self, model_bytes: bytes, config: ModelConfig, label: str, require_device: str | None = None) -> None:
        providers = choose_providers(config.optimization.execution_accelerators, ort.get_available_providers())
        options = session_options(config)
        count = config.instance_group.count
        self.sessions = [ort.InferenceSession(model_bytes, options, providers=providers) for _ in range(count)]
        first = self.sessions[0]
        self.providers: list[str] = first.get_providers()  # what really runs, not what was asked
        self.device = device_of(self.providers)
        check_device(label, require_device, providers, self.providers)
        asked_gpu = config.instance_group.kind == "KIND_GPU" or bool(GPU_PROVIDERS.intersection(providers))
        if asked_gpu and self.device == "cpu":
            log.warning("%s asks for a GPU but runs on the CPU only (%s)", label, ",".join(self.providers))
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
