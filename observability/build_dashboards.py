"""Writes the Grafana dashboards under observability/dashboards/ (`python -m observability.build_dashboards`).

The JSON files are the artefacts users import into Grafana and `meshserve init` copies into a project;
they are the models mesh/compile/dashboards.py derives from the repository's mesh.yaml (the cluster's
ConfigMaps are compiled from the deployed spec itself). A test checks the files are current.
"""

from __future__ import annotations

import json

from mesh.compile.dashboards import build
from mesh.spec import MeshSpec, load_spec
from observability.dashboards import DASHBOARD_DIR


def render(spec: MeshSpec | None = None) -> dict[str, str]:
    """File name -> JSON text of every dashboard (the repository's mesh.yaml unless `spec` is given)."""
    spec = spec or load_spec(check_repository=False)
    return {name: json.dumps(model, indent=2) + "\n" for name, model in build(spec).items()}


def main() -> None:
    DASHBOARD_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (DASHBOARD_DIR / name).write_text(text)
        print(DASHBOARD_DIR / name)


if __name__ == "__main__":
    main()
