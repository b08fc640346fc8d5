"""services/common/metric_names.py is the one spelling of every metric name: the services register
exactly its names, and no code outside it spells one as a literal (docs and tests may)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from prometheus_client import REGISTRY

import services.common.telemetry
import services.gateway.metrics
import services.modelserver.metrics
import services.pipeline.shadow  # noqa: F401  (importing registers the metrics)
from services.common import metric_names

ROOT = Path(__file__).resolve().parents[3]
HOME = ROOT / "services" / "common" / "metric_names.py"
NAME = re.compile(r"meshserve_[a-z0-9_]")  # a metric name, or a prefix of one built into an f-string
# `meshserve_` strings that are not metric names, and why.
NOT_METRICS = {
    "meshserve_request_headers",  # services/common/client.py: a ContextVar's name (debugging only)
}


def defined() -> dict[str, str]:
    return {k: v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}


def test_each_name_is_defined_once_and_follows_the_conventions() -> None:
    names = defined()
    assert len(names) >= 30
    assert len(set(names.values())) == len(names), "two constants spell the same metric"
    for constant, name in names.items():
        assert re.fullmatch(r"meshserve_[a-z0-9_]+", name), constant
        assert not name.endswith(("_bucket", "_count", "_sum")), f"{name}: those suffixes are a histogram's series"


def test_the_services_register_exactly_these_names() -> None:
    """A metric registered under a name not defined here (or a name no service registers) fails."""
    registered = {m.name for m in REGISTRY.collect() if m.name.startswith("meshserve_")}
    # prometheus-client strips `_total` from a counter family's name
    assert registered == {name.removesuffix("_total") for name in defined().values()}


def _documentation(tree: ast.AST) -> set[int]:
    """ids of the string constants that are documentation (docstrings, bare string statements)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def spelled_outside(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docs = _documentation(tree)
    found = []
    for node in ast.walk(tree):  # f-strings' literal parts are Constant nodes too
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            for match in NAME.finditer(node.value):
                word = re.match(r"\w+", node.value[match.start() :]).group(0)
                if word not in NOT_METRICS:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {word}")
    return found


def code_files() -> list[Path]:
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    return [p for root in roots for p in sorted((ROOT / root).rglob("*.py")) if p != HOME]


def test_no_metric_name_is_spelled_outside_its_module() -> None:
    found = [hit for path in code_files() for hit in spelled_outside(path)]
    assert not found, f"use services/common/metric_names.py instead of a literal: {found}"


def test_the_check_sees_literals_and_f_strings_but_not_docstrings(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Counts `meshserve_inference_requests_total` (a docstring may name it)."""\n'
        'A = "meshserve_gateway_requests_total"\n'
        'B = f"rate(meshserve_inference{X}_total[5m])"\n'
        'C = "meshserve_request_headers"\n'
    )
    hits = spelled_outside(sample, tmp_path)
    assert [h.split(": ")[1] for h in hits] == ["meshserve_gateway_requests_total", "meshserve_inference"]
