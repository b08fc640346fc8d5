"""`meshserve init`: a working project from the package's files (in-process; the wheel test runs it installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.spec import load_spec
from services.cli import main
from services.local.project import ProjectError, init


def test_init_writes_a_project_that_validates_and_ships_only_the_demo_models(tmp_path: Path) -> None:
    init(tmp_path / "p")
    project = tmp_path / "p"
    spec = load_spec(project / "mesh" / "mesh.yaml")  # its repository resolves to the copied models
    assert list(spec.models) == ["digits"] and sorted(spec.models["digits"].versions) == [1, 2]
    assert spec.repository_path(project / "mesh") == (project / "models").resolve()
    for version in (1, 2):
        assert (project / "models" / "digits" / str(version) / "model.onnx").stat().st_size > 100_000
    assert not (project / "models" / "resnet").exists()
    assert "# meshserve: the single source of truth" in (project / "mesh" / "mesh.yaml").read_text()  # comments kept
    assert not [s.route for s in spec.slos if "resnet" in s.route]
    assert len(list((project / "dashboards").glob("*.json"))) >= 5
    conf = (project / "loadtests" / "locust.conf").read_text()
    assert "users = 10" in conf and not any(line.startswith("locustfile") for line in conf.splitlines())
    assert (project / ".gitignore").read_text() == "runs/\n"


def test_init_refuses_an_existing_project_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path)]) == 0
    assert "next: cd" in capsys.readouterr().out
    spec = tmp_path / "mesh" / "mesh.yaml"
    spec.write_text(spec.read_text() + "# mine\n")
    with pytest.raises(ProjectError, match="is a meshserve project already"):
        init(tmp_path)
    assert main(["init", str(tmp_path)]) == 2 and spec.read_text().endswith("# mine\n")
    assert "--force overwrites" in capsys.readouterr().err
    assert main(["init", str(tmp_path), "--force"]) == 0 and not spec.read_text().endswith("# mine\n")
