"""KServe's own clients (InferenceGRPCClient, InferenceRESTClient), unchanged, against the shared
server: binary and typed tensors of every datatype over gRPC and REST, checked against onnxruntime.
They run in a subprocess (kserve and tritonclient[grpc] cannot share one: kserve#3099)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.services.modelserver.conftest import Repo
from tests.services.modelserver.onnx_models import DATATYPES
from tests.services.modelserver.serverproc import ROOT, Server
from tests.services.modelserver.test_grpc import sample


def test_kserve_clients_over_grpc_and_rest(server: Server, repo: Repo, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    inputs = {
        "affine": {"x": rng.standard_normal((3, 4)).astype(np.float32)},
        "ident": {f"IN_{dt}": sample(dt, seed=1) for dt in DATATYPES},  # FP16 in it: binary only
        "typed": {f"IN_{dt}": sample(dt, seed=2) for dt in DATATYPES if dt != "FP16"},
    }
    source, target = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(source, **{f"{model}/{name}": x for model, tensors in inputs.items() for name, x in tensors.items()})
    done = subprocess.run(
        [sys.executable, "-m", "tests.services.modelserver.kserve_client", server.grpc_url, server.url,
         str(source), str(target)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(target, allow_pickle=True)
    checked = set()
    for key in got.files:
        transport, kind, model, output = key.split("/")
        version = 2 if model == "affine" else 1
        expected = repo.reference(model, version, inputs[model])[output]
        value = got[key]
        if expected.dtype == object:
            value = [v.decode() if isinstance(v, bytes) else v for v in value.reshape(-1)]
            assert value == list(expected.reshape(-1)), key
        else:
            assert value.dtype == expected.dtype, key
            np.testing.assert_array_equal(value, expected, err_msg=key)
        checked.add((transport, kind, model))
    assert checked == {
        (t, k, m)
        for t in ("grpc", "rest")
        for m in inputs
        for k in ("binary", "typed")
        if not (m == "ident" and k == "typed")
    }
    assert {key.split("/")[3] for key in got.files if "/ident/" in key} == {f"OUT_{dt}" for dt in DATATYPES}
