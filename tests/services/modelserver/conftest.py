"""One shared model server process for the protocol, batching and bad-input tests.

Models (built here with onnx.helper):
- affine v1, v2 (policy all): x FP32 [N,4] -> y, relu FP32 [N,3]; short queue delay.
- ident: one Identity per v2 datatype, IN_<DT>/OUT_<DT> [N,3]; typed: the same without FP16.
- batched: affine, no preferred size, 60 s queue delay: a batch goes out only when it fills 8 rows.
- preferred: same with preferred_batch_size [4].
- plain: affine with max_batch_size 0 (no batch dimension, no batching).
- varwidth: Identity FP32 [N,W]; 60 s delay: only same-width requests can share a batch.
- admission: 60 s delay, max_queue_size 2 (queue bound and request-timeout tests).
- deadline: default_timeout 100 ms, override not allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.services.modelserver.onnx_models import affine, identity_all_types, save, write_config
from tests.services.modelserver.serverproc import Server, run_server

LONG_DELAY_US = 60_000_000
MAX_BODY = 300_000


def session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def varwidth(path: Path) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "varwidth",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "W"])],
    )
    return save(graph, path)


class Repo:
    """The shared repository plus the model bytes the tests check answers against."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[tuple[str, int], bytes] = {}

    def reference(self, model: str, version: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = session(self.models[(model, version)])
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds), strict=True))


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("repository")
    r = Repo(root)
    for version in (1, 2):
        r.models[("affine", version)] = affine(root / "affine" / str(version) / "model.onnx", seed=version)
    write_config(
        root / "affine",
        max_batch_size=8,
        description="test affine",
        version_policy={"all": {}},
        dynamic_batching={"max_queue_delay_microseconds": 500},
        instance_group={"count": 2},
        optimization={"intra_op_num_threads": 1, "inter_op_num_threads": 1},
        parameters={"owner": "tests"},
        input=[{"name": "x", "data_type": "FP32", "dims": [4]}],
    )
    r.models[("ident", 1)] = identity_all_types(root / "ident" / "1" / "model.onnx")
    write_config(root / "ident", max_batch_size=4)
    # gRPC typed contents have no FP16 field: every other datatype, for the typed-contents tests
    r.models[("typed", 1)] = identity_all_types(root / "typed" / "1" / "model.onnx", skip=("FP16",))
    write_config(root / "typed", max_batch_size=4)
    slow = {"max_queue_delay_microseconds": LONG_DELAY_US}
    for name, batching, policy in (
        ("batched", slow, {}),
        ("preferred", {**slow, "preferred_batch_size": [4]}, {}),
        ("admission", slow, {"max_queue_size": 2}),
        ("deadline", slow, {"default_timeout_microseconds": 100_000, "allow_timeout_override": False}),
    ):
        r.models[(name, 1)] = affine(root / name / "1" / "model.onnx", seed=3)
        write_config(root / name, max_batch_size=8, dynamic_batching=batching, default_queue_policy=policy)
    r.models[("plain", 1)] = affine(root / "plain" / "1" / "model.onnx", seed=5)
    write_config(root / "plain", max_batch_size=0)
    r.models[("varwidth", 1)] = varwidth(root / "varwidth" / "1" / "model.onnx")
    write_config(root / "varwidth", max_batch_size=8, dynamic_batching=slow)
    return r


@pytest.fixture(scope="session")
def server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("logs")
    args = ("--poll-interval", "0", "--max-body-bytes", str(MAX_BODY))
    with run_server(repo.root, *args, log_dir=logs, grpc=True) as s:
        yield s
