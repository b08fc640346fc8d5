"""Where every command finds its project: the spec, the model repository, the run directory.

One resolution for all of them (`up`, `status`, `validate`, `render`, `canary`, `rules`, the load
tests, the services' own `--spec`), so that `canary set` edits the file the running gateway watches
and `status` shows the stack started from the same folder:

1. an explicit `--spec PATH` (or `--run-dir`),
2. else the environment variable (`MESHSERVE_SPEC`, `MESHSERVE_RUN_DIR`),
3. else the project found from the working directory: the nearest folder, the working directory or
   one above it, that holds `mesh/mesh.yaml` (what `meshserve init` makes; this repository is one).

The installed package's own files are never a silent fallback: `meshserve init` copies them into a
project. A run directory lives under the project's `runs/` (`runs/current` is the newest), never
inside site-packages. Pure apart from reading the file system; imports nothing above the ground floor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SPEC_ENV = "MESHSERVE_SPEC"  # the mesh spec (every command and every service)
RUN_DIR_ENV = "MESHSERVE_RUN_DIR"  # a stack's run directory (status, discovery, canary advance)
LOG_FORMAT_ENV = "MESHSERVE_LOG_FORMAT"  # console logs: auto | json | text (services/common/telemetry.py)
EXIT_ON_LOAD_FAILURE_ENV = "MESHSERVE_EXIT_ON_LOAD_FAILURE"  # `serve`: exit 1 if a --model fails its first load
PROJECT_SPEC = Path("mesh") / "mesh.yaml"  # a project's spec, relative to its root
RUNS_DIR = "runs"  # a project's run directories, under its root
CURRENT_RUN = "current"  # runs/current -> the newest `meshserve up` run
STACK_FILE = "stack.json"  # in a run directory: what the supervisor runs, and from which spec

SPEC_HELP = f"mesh spec (default: ${SPEC_ENV}, else {PROJECT_SPEC} in this folder or the nearest one above it)"
RUN_DIR_HELP = f"the stack's run directory (default: ${RUN_DIR_ENV}, else runs/current of the project found from here)"


class SettingsError(ValueError):
    """No project where the command looked; the message says what to do."""


@dataclass(frozen=True)
class Found:
    """A resolved path and how it was found (for messages: 'from $MESHSERVE_SPEC')."""

    path: Path
    source: str


def find_project(start: Path | None = None) -> Path | None:
    """The nearest folder, `start` (default: the working directory) or one above it, with mesh/mesh.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_SPEC).is_file():
            return folder
    return None


def project_root(cwd: Path | None = None) -> Path:
    """Where runs/ go: the project found from the working directory, else the working directory itself."""
    return find_project(cwd) or (cwd or Path.cwd()).resolve()


def resolve_spec(
    explicit: str | Path | None = None, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Found:
    """--spec, else $MESHSERVE_SPEC, else the project's mesh/mesh.yaml; SettingsError when none applies."""
    env = os.environ if env is None else env
    base = (cwd or Path.cwd()).resolve()
    if explicit:
        return Found((base / Path(explicit).expanduser()).resolve(), "--spec")
    if env.get(SPEC_ENV):
        return Found((base / Path(env[SPEC_ENV]).expanduser()).resolve(), f"${SPEC_ENV}")
    root = find_project(base)
    if root is None:
        raise SettingsError(
            f"no mesh spec: {PROJECT_SPEC} is not in {base} or a folder above it. "
            f"Run `meshserve init` to create a project here, pass --spec PATH, or set {SPEC_ENV}"
        )
    return Found(root / PROJECT_SPEC, f"the project at {root}")


def runs_root(cwd: Path | None = None) -> Path:
    return project_root(cwd) / RUNS_DIR


def resolve_run_dir(
    explicit: str | Path | None = None, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Found:
    """--run-dir, else $MESHSERVE_RUN_DIR, else <project>/runs/current (it may not exist yet)."""
    env = os.environ if env is None else env
    base = (cwd or Path.cwd()).resolve()
    if explicit:
        return Found((base / Path(explicit).expanduser()).absolute(), "--run-dir")
    if env.get(RUN_DIR_ENV):
        return Found((base / Path(env[RUN_DIR_ENV]).expanduser()).absolute(), f"${RUN_DIR_ENV}")
    return Found(runs_root(base) / CURRENT_RUN, f"the project at {project_root(base)}")


def running_spec(run_dir: Path) -> Path | None:
    """The spec the stack in `run_dir` was started from (its stack.json), if that stack is there."""
    import json

    try:
        return Path(json.loads((run_dir / STACK_FILE).read_text())["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def repository(spec: Path) -> Path:
    """The model repository the spec names (`repository:`, relative to the spec's folder)."""
    from mesh.spec import load_spec

    return load_spec(spec, check_repository=False).repository_path(spec.parent)
