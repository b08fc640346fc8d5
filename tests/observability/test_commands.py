"""`meshserve rules` and the argument handling of `meshserve canary advance`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.cli import main
from tests.observability.livestack import copy_spec


def test_rules_command_writes_a_file_promtool_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rules.yml"
    assert main(["rules", "--out", str(out)]) == 0
    groups = yaml.safe_load(out.read_text())["groups"]
    assert any(g["name"] == "meshserve-availability" for g in groups)
    if shutil.which("promtool"):
        assert subprocess.run(["promtool", "check", "rules", str(out)], capture_output=True).returncode == 0
    assert main(["rules"]) == 0
    assert "MeshserveErrorBudgetBurn" in capsys.readouterr().out


def test_rules_command_names_a_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--spec", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_advance_without_prometheus_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_spec(tmp_path)
    before = spec.read_text()
    from mesh import canary_analysis

    monkeypatch.setattr(canary_analysis, "default_prometheus", lambda: None)  # whatever runs/current holds
    assert main(["canary", "--spec", str(spec), "advance", "digits", "v2"]) == 2
    assert "--prometheus" in capsys.readouterr().err
    assert (
        main(
            [
                "canary",
                "--spec",
                str(spec),
                "advance",
                "digits",
                "v2",
                "--steps",
                "50,25",
                "--prometheus",
                "http://127.0.0.1:9",
            ]
        )
        == 2
    )
    assert "--steps" in capsys.readouterr().err
    assert main(["canary", "--spec", str(spec), "advance", "digits", "v1", "--prometheus", "http://127.0.0.1:9"]) == 2
    assert "v1 is already the stable version of digits" in capsys.readouterr().err
    assert spec.read_text() == before, "a refused analysis leaves the spec alone"
