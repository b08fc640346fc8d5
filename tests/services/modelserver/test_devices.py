"""What a version really runs on: model metadata and a metric label name the providers onnxruntime
loaded (session.get_providers()), and a server told `--require-device gpu` (a GPU pod) refuses to become
ready when only the CPU provider loaded. Real `meshserve serve` processes; this machine has no GPU, which
is exactly the case the refusal is for."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from services.modelserver.runtime import GPU_PROVIDERS, cuda_major_for, device_of
from tests.services.modelserver.serverproc import run_server, wait_for

MODELS = Path(__file__).resolve().parents[3] / "models"
pytestmark = pytest.mark.skipif(
    bool(GPU_PROVIDERS.intersection(ort.get_available_providers())), reason="a GPU build of onnxruntime is here"
)


def test_every_version_reports_the_providers_it_really_runs_on(tmp_path: Path) -> None:
    with run_server(MODELS, "--model", "resnet:1", log_dir=tmp_path) as server:
        meta = server.get("/v2/models/resnet/versions/1").json()
        # resnet's config asks for [tensorrt, cuda, cpu]: this CPU build runs it on the CPU, and says so
        assert meta["parameters"]["execution_providers"] == ["CPUExecutionProvider"]
        assert meta["parameters"]["device"] == "cpu"
        labels = {"model": "resnet", "version": "1"}
        assert server.metric("meshserve_model_execution_provider", **labels, provider="CPUExecutionProvider") == 1
        assert server.metric("meshserve_model_execution_provider", **labels, provider="CUDAExecutionProvider") == 0


def test_a_gpu_pod_that_got_only_the_cpu_provider_never_becomes_ready(tmp_path: Path) -> None:
    with run_server(MODELS, "--model", "resnet:1", "--require-device", "gpu", log_dir=tmp_path, ready=False) as server:

        def failed() -> dict | None:
            rows = server.post("/v2/repository/index", json={}).json()
            return next((r for r in rows if r.get("state") == "UNAVAILABLE"), None)

        row = wait_for(failed, 60, "resnet v1 to fail its load")
        assert row["name"] == "resnet" and row["version"] == "1"
        assert "must run on a GPU (--require-device gpu)" in row["reason"]
        assert "CPUExecutionProvider" in row["reason"] and "cpu_fallback: true" in row["reason"]
        assert server.get("/v2/health/ready").status_code == 503  # resnet is `required: false`, still not ready
        assert server.get("/v2/models/resnet/versions/1/ready").status_code == 503
        assert server.get("/v2/health/live").status_code == 200
        assert server.metric("meshserve_model_load_failures_total", model="resnet", version="1") == 1
        assert "must run on a GPU" in server.logs()


def test_the_onnxruntime_gpu_to_cuda_table() -> None:
    # From the wheels' metadata: 1.26.0 needs nvidia-cuda-runtime-cu12, 1.27.0 nvidia-cuda-runtime-cu13.
    assert cuda_major_for("1.20.0") == 12
    assert cuda_major_for("1.26.0") == 12
    assert cuda_major_for("1.27.0") == 13
    assert cuda_major_for("1.31.1") == 13
    assert cuda_major_for("1.19.2") is None
    assert device_of(["CUDAExecutionProvider", "CPUExecutionProvider"]) == "gpu"
    assert device_of(["CPUExecutionProvider"]) == "cpu"
