"""`meshserve model publish` and the registry view on a temporary copy of the digits repository:
a retrained digits passes and becomes the next version with its figures and lineage; the broken
fixture, a graph with another signature and a file that is no model are refused and nothing is
written; `--force` writes a failing one, marked overridden; `list`/`show` report state and lineage."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from mesh import canary
from mesh.spec import read_yaml
from services.cli import main
from tests.lifecycle.helpers import BAD, RESNET, RETRAINED, make_repository, make_spec, snapshot


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repository(tmp_path)


@pytest.fixture
def spec(tmp_path: Path, repo: Path) -> Path:
    return make_spec(tmp_path, repo)


def publish(spec: Path, *args: str) -> int:
    return main(["model", "publish", "--spec", str(spec), *args])


def test_a_retrained_digits_passes_and_becomes_the_next_version(
    repo: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish(spec, "digits", str(RETRAINED), "--source-version", "1", "--note", "seed 11") == 0
    out = capsys.readouterr().out
    assert "published digits v3" in out and "pass  top-1 agreement with stable" in out
    written = repo / "digits" / "3"
    assert (written / "model.onnx").read_bytes() == RETRAINED.read_bytes()
    meta = yaml.safe_load((written / "metadata.yaml").read_text())
    assert meta["version"] == 3 and meta["parent"] == 1
    assert meta["sha256"] == hashlib.sha256(RETRAINED.read_bytes()).hexdigest()
    assert meta["produced_by"] == {"how": "publish", "source_file": "model.onnx", "note": "seed 11"}
    # The recorded figures are what onnxruntime gives on the held-out split, recomputed here.
    x = np.load(repo / "digits/evaluation/inputs.npy")
    y = np.load(repo / "digits/evaluation/labels.npy")
    top1 = ort.InferenceSession(str(RETRAINED)).run(["logits"], {"input": x})[0].argmax(axis=1)
    stable = ort.InferenceSession(str(repo / "digits/1/model.onnx")).run(["logits"], {"input": x})[0].argmax(axis=1)
    evaluation = meta["evaluation"]
    assert evaluation["value"] == pytest.approx(float((top1 == y).mean()))
    assert evaluation["agreement_with_stable"] == pytest.approx(float((top1 == stable).mean()))
    assert evaluation["stable_version"] == 1 and evaluation["rows"] == 450
    assert evaluation["passed"] is True and evaluation["overridden"] is False
    assert [g["name"] for g in evaluation["gates"]] == [
        "signature", "accuracy floor", "drop against stable", "top-1 agreement with stable", "batch-1 latency",
    ]  # fmt: skip
    perf = meta["performance"]
    assert perf["baseline_version"] == 1 and perf["stable_version"] == 1 and perf["candidate"]["threads"] == 1
    assert set(perf["candidate"]["batches"]) == {"1", "16", "32", "64"}  # 1, preferred sizes, max_batch_size
    assert perf["candidate"]["latency_b1_ms"] > 0 and perf["baseline"]["latency_b1_ms"] > 0
    assert meta["published"]["by"] and meta["published"]["at"]


def test_the_broken_fixture_is_refused_naming_the_gates_and_nothing_is_written(
    repo: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(repo)
    assert publish(spec, "digits", str(BAD)) == 1
    err = capsys.readouterr().err
    assert "refused, failed gate(s)" in err and "nothing written" in err
    assert "top-1 agreement with stable (0.0000" in err and "accuracy floor" in err
    assert snapshot(repo) == before


@pytest.mark.parametrize(
    ("candidate", "named"),
    [
        (RESNET, "signature check failed"),  # another model's graph: input dims differ
        (None, "onnxruntime cannot load it"),  # not a model at all
    ],
)
def test_a_candidate_that_is_not_a_digits_graph_is_refused(
    repo: Path, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], candidate: Path | None, named: str
) -> None:
    if candidate is None:
        candidate = tmp_path / "junk.onnx"
        candidate.write_bytes(b"not an onnx file")
    before = snapshot(repo)
    assert publish(spec, "digits", str(candidate)) == 1
    err = capsys.readouterr().err
    assert named in err
    if candidate == RESNET:
        assert "'input'" in err, "the message names the tensor"
    assert snapshot(repo) == before


def test_a_model_without_a_contract_cannot_publish(repo: Path, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "digits" / "evaluation.yaml").unlink()
    assert publish(spec, "digits", str(RETRAINED)) == 2
    assert "evaluation.yaml is missing" in capsys.readouterr().err
    assert not (repo / "digits" / "3").exists()


def test_force_writes_a_failing_version_marked_overridden(repo: Path, spec: Path) -> None:
    assert publish(spec, "digits", str(BAD), "--force", "--note", "drill") == 0
    meta = yaml.safe_load((repo / "digits" / "3" / "metadata.yaml").read_text())
    assert meta["evaluation"]["passed"] is False and meta["evaluation"]["overridden"] is True
    assert meta["evaluation"]["value"] < 0.5


def test_list_and_show_report_state_weight_lineage_and_figures(
    repo: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish(spec, "digits", str(RETRAINED), "--source-version", "2") == 0
    canary.apply_to_file(spec, lambda d: canary.set_weights(d, "digits", {2: 30}))
    capsys.readouterr()
    assert main(["model", "list", "--spec", str(spec), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = {r["version"]: r for r in listed["models"]["digits"]}
    assert {v: (r["state"], r["weight"]) for v, r in rows.items()} == {
        1: ("stable", 70),
        2: ("canary", 30),
        3: ("published", 0),
    }
    assert rows[3]["parent"] == 2 and rows[3]["produced_by"] == "publish" and rows[3]["gates_passed"] is True
    assert rows[1]["produced_by"] == "python models/build.py --only digits"  # built before the lifecycle
    assert rows[1]["value"] == pytest.approx(0.9844, abs=1e-4)

    # A promoted v3 makes v1 and v2 "serving" (in the spec, no weight); out of the spec, v1 is retired.
    doc = canary.promote(read_yaml(spec), "digits", 2)
    spec.write_text(canary.dump(doc))
    capsys.readouterr()
    assert main(["model", "show", "digits", "--spec", str(spec), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    states = {r["version"]: r["state"] for r in shown["versions"]}
    assert states == {1: "serving", 2: "stable", 3: "published"}
    v3 = next(r for r in shown["versions"] if r["version"] == 3)
    assert v3["metadata"]["sha256"] == hashlib.sha256(RETRAINED.read_bytes()).hexdigest()

    assert main(["model", "show", "digits", "--spec", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "v3 | published | 0% | v2 | publish | accuracy" in text and "rows/s at batch" in text


def test_the_cli_is_registered_without_importing_onnxruntime() -> None:
    """`meshserve status` must not pay for the lifecycle's imports (services/cli.py's rule)."""
    import subprocess

    code = "import sys, services.cli as c; c.build_parser(); print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
