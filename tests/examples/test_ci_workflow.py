"""The example CI/CD workflow (examples/ci/) cannot run here (no cloud account): it is held against the
GitHub Actions workflow schema that check-jsonschema vendors (offline), and its steps are checked to
call the lifecycle commands this repository ships, with options their parsers accept."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from services.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "ci" / "model-release.yml"


def test_the_workflow_matches_the_github_actions_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_workflow_is_caught(tmp_path: Path) -> None:
    """The check can fail: a job without runs-on (or uses) is not a workflow GitHub accepts."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    del doc["jobs"]["publish"]["runs-on"]
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0


def _meshserve_calls() -> list[list[str]]:
    """Every `meshserve ...` command line in the workflow's run scripts, continuation lines joined."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    scripts = [step.get("run", "") for job in doc["jobs"].values() for step in job.get("steps", [])]
    calls = []
    for script in scripts:
        for line in script.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("meshserve "):
                line = re.split(r"\s(?:>|\|\|)\s", line)[0]
                calls.append(shlex.split(line)[1:])
    return calls


def test_the_workflow_runs_publish_optimize_and_release_with_options_that_exist() -> None:
    calls = _meshserve_calls()
    assert [c[:2] for c in calls] == [["model", "publish"], ["model", "optimize"], ["model", "release"]]
    parser = build_parser()
    for argv in calls:
        args = parser.parse_args([a if not a.startswith("$") else "1" for a in argv])
        assert args.func is not None
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert doc["jobs"]["release"]["environment"] == "production", "release waits for approval"
    assert doc["jobs"]["image"]["if"] == "needs.changes.outputs.code == 'true'", "the image only when code changed"
    assert any("preview" in str(step.get("with", {}).get("command")) for step in doc["jobs"]["preview"]["steps"])
