"""The repository index carries a version's lineage and evaluation (from its metadata.yaml) as extra
`parameters`: read once when the version loads, absent for a version without metadata, and a
metadata file that is not YAML costs nothing but the parameters."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from services.modelserver.repository import version_parameters
from tests.services.modelserver.serverproc import run_server, wait_for

ROOT = Path(__file__).resolve().parents[3]
PUBLISHED = {
    "model": "digits",
    "version": 3,
    "sha256": "ab" * 32,
    "parent": 2,
    "produced_by": {"how": "optimize: int8 static", "source_version": 2},
    "evaluation": {"metric": "accuracy", "value": 0.98, "agreement_with_stable": 0.99, "passed": True},
}


def test_version_parameters_from_lifecycle_and_build_metadata(tmp_path: Path) -> None:
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "metadata.yaml").write_text(yaml.safe_dump(PUBLISHED))
    assert version_parameters(tmp_path / "3") == {
        "sha256": "ab" * 32,
        "parent": "2",
        "produced_by": "optimize: int8 static",
        "metric": "accuracy",
        "metric_value": "0.98",
        "agreement_with_stable": "0.99",
        "gates_passed": "True",
    }
    built = version_parameters(ROOT / "models" / "digits" / "1")  # written by models/build.py
    assert built == {"produced_by": "python models/build.py --only digits", "metric_value": "0.9844444444444445"}
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "metadata.yaml").write_text("a: [unclosed\n")
    assert version_parameters(tmp_path / "4") == {} and version_parameters(tmp_path / "5") == {}


def test_the_index_shows_the_parameters_of_each_loaded_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "models" / "digits", repo / "digits")
    shutil.copy(repo / "digits" / "1" / "model.onnx", tmp_path / "model.onnx")
    (repo / "digits" / "2" / "metadata.yaml").unlink()  # a version without metadata
    with run_server(repo, "--poll-interval", "0.1", log_dir=tmp_path) as server:
        staging = repo / "digits" / ".staging"
        staging.mkdir()
        shutil.copy(tmp_path / "model.onnx", staging / "model.onnx")
        (staging / "metadata.yaml").write_text(yaml.safe_dump(PUBLISHED))
        staging.rename(repo / "digits" / "3")

        def rows() -> dict[str, dict]:
            return {r["version"]: r for r in server.post("/v2/repository/index").json() if r["name"] == "digits"}

        wait_for(lambda: rows().get("3", {}).get("state") == "READY", 30, "v3 loaded")
        index = rows()
        assert index["3"]["parameters"]["parent"] == "2"
        assert index["3"]["parameters"]["produced_by"] == "optimize: int8 static"
        assert index["1"]["parameters"]["produced_by"] == "python models/build.py --only digits"
        assert "parameters" not in index["2"]
