"""The committed demo model repository matches its checksums, configs and recorded measurements.

No torch needed: onnxruntime, numpy, PyYAML, scikit-learn and the model server's own config and
signature code. Figures are recomputed from the committed ONNX files with the same one-thread,
whole-batch settings the build used.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from services.common.datatypes import ORT_TO_V2
from services.modelserver.config import load_config
from services.modelserver.signature import build_signature

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
FIXTURES = REPO / "tests" / "fixtures" / "models"
UNCOMMITTED = {"minilm"}  # built on demand, gitignored

sys.path.insert(0, str(MODELS))
from digits_data import LABELS, SPLIT_PARAMS, load_split  # noqa: E402


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def read_sums(root: Path) -> dict[str, str]:
    entries = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        entries[rel] = digest
    return entries


def committed_models() -> list[Path]:
    return sorted(
        p for p in MODELS.glob("*/*/model.onnx") if p.parent.name.isdigit() and p.parent.parent.name not in UNCOMMITTED
    )


def model_dirs() -> list[Path]:
    return sorted(p.parent for p in MODELS.glob("*/config.yaml"))


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, ...]:
    return load_split()


@pytest.fixture(scope="module")
def digits_logits(split) -> dict[str, np.ndarray]:
    """Test-split logits of digits v1, v2 and the bad fixture, each run as one batch."""
    x_test = split[2]
    paths = {
        "1": MODELS / "digits" / "1" / "model.onnx",
        "2": MODELS / "digits" / "2" / "model.onnx",
        "bad": FIXTURES / "digits_bad" / "model.onnx",
    }
    return {k: session(p).run(["logits"], {"input": x_test})[0] for k, p in paths.items()}


@pytest.mark.parametrize("root", [MODELS, FIXTURES], ids=["models", "fixtures"])
def test_sha256sums_match_files(root: Path) -> None:
    sums = read_sums(root)
    assert sums, f"{root}/SHA256SUMS is empty"
    for rel, digest in sums.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel


def test_sha256sums_cover_every_committed_model() -> None:
    listed = set(read_sums(MODELS))
    present = {p.relative_to(MODELS).as_posix() for p in committed_models()}
    assert present == listed
    assert {"digits/1/model.onnx", "digits/2/model.onnx", "resnet/1/model.onnx"} <= present


def test_demo_models_present() -> None:
    assert {d.name for d in model_dirs()} >= {"digits", "resnet"}


@pytest.mark.parametrize("model_dir", model_dirs(), ids=lambda p: p.name)
def test_config_signature_matches_every_version_graph(model_dir: Path) -> None:
    config = load_yaml(model_dir / "config.yaml")
    assert config["name"] == model_dir.name
    assert config["platform"] == "onnxruntime_onnx"
    batched = config["max_batch_size"] > 0
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
    assert versions, f"{model_dir.name} has no version directory"
    for version in versions:
        sess = session(version / "model.onnx")
        for declared, actual in ((config["input"], sess.get_inputs()), (config["output"], sess.get_outputs())):
            assert [t["name"] for t in declared] == [a.name for a in actual], version
            for tensor, arg in zip(declared, actual, strict=True):
                assert ORT_TO_V2[arg.type] == tensor["data_type"], (version, arg.name)
                shape = list(arg.shape)
                if batched:
                    assert not isinstance(shape[0], int), f"{version}/{arg.name}: batch axis is not dynamic"
                    shape = shape[1:]
                expected = [d if d != -1 else None for d in tensor["dims"]]
                got = [d if isinstance(d, int) else None for d in shape]
                assert got == expected, (version, arg.name)


@pytest.mark.parametrize("model_dir", model_dirs(), ids=lambda p: p.name)
def test_model_server_accepts_config_and_graphs(model_dir: Path) -> None:
    """The server's own loader parses the config and builds each version's signature without error."""
    config = load_config(model_dir)
    for version in (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        sess = session(version / "model.onnx")
        signature = build_signature(config, sess.get_inputs(), sess.get_outputs())
        assert set(signature.inputs) == {t.name for t in config.input}
        assert set(signature.outputs) == {t.name for t in config.output}


def test_digits_config_follows_contract() -> None:
    config = load_yaml(MODELS / "digits" / "config.yaml")
    assert config["max_batch_size"] == 64
    assert config["required"] is True
    assert config["version_policy"] == {"all": {}}
    assert "dynamic_batching" in config
    labels = (MODELS / "digits" / "labels.txt").read_text().splitlines()
    assert labels == list(LABELS) and len(labels) == config["output"][0]["dims"][0]


def test_resnet_config_says_random_weights() -> None:
    config = load_yaml(MODELS / "resnet" / "config.yaml")
    assert "random weights" in config["description"]
    assert config["max_batch_size"] == 32
    assert config["dynamic_batching"]["preferred_batch_size"]


def test_split_is_deterministic_and_shaped(split) -> None:
    x_train, _, x_test, y_test = split
    again = load_split()
    for a, b in zip(split, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert x_train.dtype == x_test.dtype == np.float32
    assert x_train.shape[1:] == x_test.shape[1:] == (1, 8, 8)
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 450
    assert x_test.min() >= 0.0 and x_test.max() <= 1.0
    assert set(np.unique(y_test)) == set(range(10))


@pytest.mark.parametrize("version", ["1", "2"])
def test_digits_accuracy_recomputed_equals_recorded(version: str, split, digits_logits) -> None:
    meta = load_yaml(MODELS / "digits" / version / "metadata.yaml")
    y_test = split[3]
    correct = int((digits_logits[version].argmax(axis=1) == y_test).sum())
    assert correct == meta["held_out"]["correct"]
    assert abs(correct / len(y_test) - meta["held_out"]["accuracy"]) < 1e-9
    assert meta["held_out"]["accuracy"] >= 0.95
    recorded_split = {k: v for k, v in meta["split"].items() if k not in ("n_train", "n_test")}
    assert recorded_split == SPLIT_PARAMS
    assert (meta["split"]["n_train"], meta["split"]["n_test"]) == (len(split[0]), len(y_test))


def test_digits_versions_differ_a_little(digits_logits) -> None:
    v1, v2 = digits_logits["1"].argmax(axis=1), digits_logits["2"].argmax(axis=1)
    agreement = float((v1 == v2).mean())
    assert (v1 != v2).any(), "v2 gives exactly v1's answers"
    assert agreement >= 0.9
    recorded = load_yaml(MODELS / "digits" / "2" / "metadata.yaml")["agreement_with_v1"]
    assert abs(agreement - recorded["top1_agreement"]) < 1e-9
    assert int((v1 != v2).sum()) == recorded["differing_images"]


def test_bad_fixture_has_v1_signature_but_disagrees(digits_logits) -> None:
    v1, bad = session(MODELS / "digits" / "1" / "model.onnx"), session(FIXTURES / "digits_bad" / "model.onnx")
    for a, b in ((v1.get_inputs(), bad.get_inputs()), (v1.get_outputs(), bad.get_outputs())):
        assert [(t.name, t.type, t.shape) for t in a] == [(t.name, t.type, t.shape) for t in b]
    agreement = float((digits_logits["1"].argmax(axis=1) == digits_logits["bad"].argmax(axis=1)).mean())
    recorded = load_yaml(FIXTURES / "digits_bad" / "metadata.yaml")["agreement_with_v1"]["top1_agreement"]
    assert abs(agreement - recorded) < 1e-9
    assert agreement < 0.5


def test_bad_fixture_is_not_served() -> None:
    assert not (MODELS / "digits_bad").exists()
    versions = sorted(p.name for p in (MODELS / "digits").iterdir() if p.is_dir() and p.name.isdigit())
    assert versions == ["1", "2"]


def test_resnet_runs_a_batch_to_distinct_finite_logits() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    logits = session(MODELS / "resnet" / "1" / "model.onnx").run(["logits"], {"input": x})[0]
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert not np.allclose(logits[0], logits[1])
    meta = load_yaml(MODELS / "resnet" / "1" / "metadata.yaml")
    assert meta["inference_one_image_1_thread"]["median_ms"] > 0
