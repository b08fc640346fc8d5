"""One resolution of spec and run directory for every command: --flag, then the env var, then the project."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services.common import settings
from services.common.settings import SettingsError, find_project, resolve_run_dir, resolve_spec

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "mesh").mkdir(parents=True)
    (root / "mesh" / "mesh.yaml").write_text("models: {}\n")
    (root / "deep" / "er").mkdir(parents=True)
    return root


def test_the_project_is_found_from_the_working_directory_or_above(project: Path) -> None:
    assert find_project(project) == project.resolve()
    assert find_project(project / "deep" / "er") == project.resolve()
    found = resolve_spec(env={}, cwd=project / "deep")
    assert found.path == project.resolve() / "mesh" / "mesh.yaml" and "project" in found.source


def test_an_explicit_spec_wins_over_the_environment_which_wins_over_the_project(project: Path, tmp_path: Path) -> None:
    env = {settings.SPEC_ENV: str(tmp_path / "from-env.yaml")}
    assert resolve_spec("other.yaml", env=env, cwd=project).path == project.resolve() / "other.yaml"
    assert resolve_spec(None, env=env, cwd=project).path == tmp_path / "from-env.yaml"
    assert resolve_spec(None, env={}, cwd=project).path == project.resolve() / "mesh" / "mesh.yaml"


def test_outside_any_project_it_says_what_to_do_and_never_falls_back_to_the_package(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"meshserve init.*--spec.*MESHSERVE_SPEC"):
        resolve_spec(env={}, cwd=tmp_path)


def test_run_dir_is_the_projects_runs_current(project: Path, tmp_path: Path) -> None:
    """`status` reads the stack `up` started from the same project (not the package's runs/)."""
    assert resolve_run_dir(env={}, cwd=project / "deep").path == project.resolve() / "runs" / "current"
    assert resolve_run_dir(env={settings.RUN_DIR_ENV: "/x/run"}, cwd=project).path == Path("/x/run")
    assert resolve_run_dir("r", env={settings.RUN_DIR_ENV: "/x/run"}, cwd=project).path == project.resolve() / "r"
    assert resolve_run_dir(env={}, cwd=tmp_path).path == tmp_path.resolve() / "runs" / "current"  # no project


def test_the_repository_is_the_one_the_spec_names() -> None:
    assert settings.repository(REPO / "mesh" / "mesh.yaml") == REPO / "models"


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_meshserve_spec_is_spelled_once() -> None:
    """The variable's name is a constant of the settings module; everyone else imports it."""
    spelled = [
        path.relative_to(REPO)
        for folder in ("services", "mesh", "observability", "loadtests", "infra")
        for path in (REPO / folder).rglob("*.py")
        if settings.SPEC_ENV in _string_constants(path)
    ]
    assert spelled == [Path("services/common/settings.py")]


def test_settings_imports_nothing_above_the_ground_floor() -> None:
    tree = ast.parse((REPO / "services" / "common" / "settings.py").read_text())
    imported = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [n])
        if not isinstance(n, ast.ImportFrom) or n.module
    }
    assert imported <= {"__future__", "os", "json", "collections", "dataclasses", "pathlib", "mesh"}
