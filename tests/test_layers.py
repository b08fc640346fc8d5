"""The import layers hold: every import runs downward, runtime siblings never import each other.

The contracts live in pyproject.toml (`[tool.importlinter]`, run by hand with `lint-imports`); the
README's "Layers" section draws them. Top to bottom:

  services.cli                                  the dispatcher
  services.local | loadtests | infra            consumers of everything below (supervisor, load tests
                                                and benchmarks, the Pulumi program), independent
  lifecycle > mesh.canary_analysis > mesh.canary   the release layer
  observability
  mesh.render > (services.modelserver | services.pipeline | services.gateway | mesh.compile)
  services.discovery > services.common > (mesh.spec | services.cliparser)   the ground floor

No exception is listed (`ignore_imports`): the compilers derive the PromQL, the SLO alert rules and the
dashboards themselves (mesh/compile/promql.py, alerts.py, dashboards.py) instead of taking them from
observability/. A loop hidden behind importlib would escape the graph, so importing by name is allowed
only where the name is not one of ours to place in a layer (below).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import grimp
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"


def importlinter_config() -> dict:
    return tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]


def test_contracts_kept(capsys) -> None:
    configuration.configure()  # what the `lint-imports` script does first (settings readers, printer)
    kept = lint_imports(config_filename=str(CONFIG), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out


def test_no_contract_lists_an_exception() -> None:
    """An `ignore_imports` entry would let an upward import back in while the contracts read as kept."""
    excepted = {c["id"]: c["ignore_imports"] for c in importlinter_config()["contracts"] if c.get("ignore_imports")}
    assert not excepted, f"imports excepted from the layer contracts: {excepted}"


def test_the_compilers_import_nothing_above_them() -> None:
    """mesh.compile and mesh.render reach only the spec and the shared contracts (services.common,
    services.discovery); observability, a running service or the release layer would be an upward arrow."""
    graph = grimp.build_graph(*importlinter_config()["root_packages"], include_external_packages=False, cache_dir=None)
    allowed = ("mesh.compile", "mesh.render", "mesh.spec", "services.common", "services.discovery")
    upward = sorted(
        f"{importer} -> {imported}"
        for importer in graph.modules
        if importer.startswith(("mesh.compile", "mesh.render"))
        for imported in graph.find_modules_directly_imported_by(importer)
        if not any(imported == a or imported.startswith(a + ".") for a in allowed)
    )
    assert not upward, f"the compilers import above their layer: {upward}"


def layer_modules() -> list[str]:
    layers = next(c for c in importlinter_config()["contracts"] if c["id"] == "layers")["layers"]
    return [name.strip() for layer in layers for name in layer.replace(":", "|").split("|")]


def test_every_module_sits_in_a_layer() -> None:
    """A new package outside every layer would be outside the contract: each module must be placed."""
    roots = importlinter_config()["root_packages"]
    placed = layer_modules()
    graph = grimp.build_graph(*roots, include_external_packages=False, cache_dir=None)
    unplaced = sorted(
        m for m in graph.modules if m not in roots and not any(m == p or m.startswith(p + ".") for p in placed)
    )
    assert not unplaced, f"modules in no layer (add them to [tool.importlinter] in pyproject.toml): {unplaced}"


# Imports by name the graph cannot see, and why each is not a hidden loop.
BY_NAME_ALLOWED = {
    "services/cli.py",  # the top-level dispatcher: COMMAND_MODULES, every one below it
    "infra/objects.py",  # pulumi_kubernetes classes by kind: a third-party package, not a layer
}


def test_no_import_hidden_behind_importlib() -> None:
    found = []
    for root in importlinter_config()["root_packages"]:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name in ("import_module", "__import__") and rel not in BY_NAME_ALLOWED:
                        found.append(f"{rel}:{node.lineno}")
    assert not found, f"imports by name hide the dependency from the layer contract: {found}"
