"""A canary step changes nothing in the rendered objects but the VirtualService weights: render,
run `meshserve canary set`, render again, and diff every object field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli import main


def leaves(node: Any, path: tuple = ()) -> dict[tuple, Any]:
    """Every scalar by its path, so two renders compare field by field."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in leaves(child, (*path, key)).items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in leaves(child, (*path, i)).items()}
    return {path: node}


def render(spec: Path, out: Path) -> dict[tuple, Any]:
    assert main(["render", "--stack", "prod", "--spec", str(spec), "-o", str(out)]) == 0
    found: dict[tuple, Any] = {}
    for path in sorted(out.glob("*.yaml")):
        found.update(leaves(yaml.safe_load(path.read_text()), (path.name,)))
    return found


@pytest.mark.parametrize(("assignment", "weights"), [("v2=25", [75, 25]), ("v2=0", [100, 0]), ("2=100", [0, 100])])
def test_canary_set_changes_only_the_virtual_service_weights(
    spec_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], assignment: str, weights: list[int]
) -> None:
    before = render(spec_copy, tmp_path / "before")
    assert main(["canary", "--spec", str(spec_copy), "set", "digits", assignment]) == 0
    after = render(spec_copy, tmp_path / "after")
    capsys.readouterr()

    assert before.keys() == after.keys()  # no object or field appears or disappears
    changed = {path for path in before if before[path] != after[path]}
    vs = next(p[0] for p in before if p[0].endswith("-virtualservice-meshserve-digits.yaml"))
    split = max(p[3] for p in before if p[0] == vs and p[1:3] == ("spec", "http"))
    weight_paths = {(vs, "spec", "http", split, "route", i, "weight") for i in range(2)}
    assert changed <= weight_paths
    assert [after[p] for p in sorted(weight_paths)] == weights
    assert changed == {p for p in weight_paths if before[p] != after[p]}
    assert changed, "the demo spec starts at 90/10: every step above changes something"
