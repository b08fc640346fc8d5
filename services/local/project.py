"""`meshserve init [DIR]`: a project of one's own, from the files the package ships.

A project is a folder laid out like this repository, which is one: `mesh/mesh.yaml` (the spec),
`models/` (the model repository it names), `dashboards/` (the Grafana JSON), `loadtests/locust.conf`,
and `runs/` once `meshserve up` has run. Every command finds it from the working directory
(services/common/settings.py). The spec is the package's own `mesh/mesh.yaml` (comments kept) less
the models whose files the package does not ship (the 12 MB `resnet` benchmark model stays out of
the wheel); the demo models are `digits` v1 and v2 (services/local/demo/, the repository's own files).
"""

from __future__ import annotations

import io
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from services.common import settings

DEMO_MODELS = resources.files("services.local") / "demo"
GITIGNORE = "runs/\n"


class ProjectError(ValueError):
    """The folder cannot become a project (one is there already)."""


def shipped_models() -> list[str]:
    return sorted(entry.name for entry in DEMO_MODELS.iterdir() if entry.is_dir())


def project_spec(shipped: list[str]) -> str:
    """The package's mesh.yaml as text, keeping only the models in `shipped` (and the SLOs of those)."""
    from mesh.spec import DEFAULT_SPEC_PATH, read_yaml, round_trip_yaml

    doc: Any = read_yaml(DEFAULT_SPEC_PATH)
    for name in [m for m in doc["models"] if m not in shipped]:
        del doc["models"][name]
    slos = doc.get("slos") or []
    for index in reversed(range(len(slos))):
        parts = str(slos[index]["route"]).strip("/").split("/")
        if parts[:2] == ["v2", "models"] and len(parts) > 2 and parts[2] not in shipped:
            del slos[index]
    out = io.StringIO()
    round_trip_yaml().dump(doc, out)
    return out.getvalue()


def locust_conf() -> str:
    """loadtests/locust.conf without its `locustfile` line: `python -m loadtests run` passes the packaged one."""
    text = (resources.files("loadtests") / "locust.conf").read_text()
    kept = [line for line in text.splitlines() if not line.startswith("locustfile")]
    return "\n".join(kept) + "\n"


def _copy_tree(source: Any, target: Path) -> None:
    """Copy an importlib.resources directory (a real folder or a zip entry) to `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        else:
            with entry.open("rb") as src, (target / entry.name).open("wb") as dst:
                shutil.copyfileobj(src, dst)


def init(directory: Path, *, force: bool = False) -> list[Path]:
    """Write a working project into `directory`; returns what was written (top-level entries)."""
    from mesh.spec import load_spec
    from observability.dashboards import load_dashboards

    directory = directory.resolve()
    spec = directory / settings.PROJECT_SPEC
    if spec.exists() and not force:
        raise ProjectError(f"{spec} exists: {directory} is a meshserve project already (--force overwrites)")
    shipped = shipped_models()
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(project_spec(shipped))
    models = directory / "models"
    for name in shipped:
        _copy_tree(DEMO_MODELS / name, models / name)
    dashboards = directory / "dashboards"
    dashboards.mkdir(exist_ok=True)
    for name, dashboard in load_dashboards().items():
        (dashboards / name).write_text(json.dumps(dashboard, indent=2) + "\n")
    conf = directory / "loadtests" / "locust.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(locust_conf())
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE)
    load_spec(spec)  # what was written validates against what was copied
    return [spec, models, dashboards, conf]
