"""The evaluation contract and the gates: the committed contracts parse, mistakes are named, and each
gate passes and fails where it should (pure functions, no models run)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lifecycle.contract import Gates, parse_contract
from lifecycle.gates import Figures, judge
from tests.lifecycle.helpers import REPO

GOOD = Figures("accuracy", 0.98, 0.984, 0.97, 0.05, 0.05)
ALL = Gates(min_metric=0.95, max_drop=0.02, min_agreement=0.95, max_latency_ratio=2.0)


@pytest.mark.parametrize("model", ["digits", "resnet"])
def test_the_committed_contracts_parse(model: str) -> None:
    path = REPO / "models" / model / "evaluation.yaml"
    contract = parse_contract(path.read_text(), str(path))
    assert contract.metric == {"digits": "accuracy", "resnet": "agreement"}[model]


def test_the_digits_evaluation_data_is_the_held_out_split() -> None:
    """models/build_evaluation.py wrote exactly models/digits_data.py's test split."""
    import sys

    sys.path.insert(0, str(REPO / "models"))
    from digits_data import load_split

    _, _, x_test, y_test = load_split()
    np.testing.assert_array_equal(np.load(REPO / "models/digits/evaluation/inputs.npy"), x_test)
    np.testing.assert_array_equal(np.load(REPO / "models/digits/evaluation/labels.npy"), y_test)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("metric: accuracy\ndata: {inputs: {x: a.npy}}\n", "metric `accuracy` needs data.labels"),
        ("metric: agreement\ndata: {}\n", "exactly one of `inputs`"),
        ("metric: agreement\ndata: {generate: {count: 4}}\ngates: {min_agrement: 0.9}\n", "gates.min_agrement"),
        ("metric: precision\ndata: {generate: {}}\n", "metric"),
        ("metric: agreement\ndata: {generate: {}}\ngates: {max_drop: 2}\n", "gates.max_drop"),
        ("metric: [\n", "not valid YAML"),
    ],
)
def test_contract_mistakes_are_named(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace("`", "`")) as info:
        parse_contract(text, "x/evaluation.yaml")
    assert "x/evaluation.yaml" in str(info.value)


def _failed(figures: Figures, gates: Gates = ALL) -> list[str]:
    return [g.name for g in judge(figures, gates) if not g.passed]


def test_a_good_candidate_passes_every_gate() -> None:
    assert [g.name for g in judge(GOOD, ALL)] == [
        "accuracy floor",
        "drop against stable",
        "top-1 agreement with stable",
        "batch-1 latency",
    ]
    assert _failed(GOOD) == []


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"value": 0.9}, ["accuracy floor", "drop against stable"]),
        ({"value": 0.96}, ["drop against stable"]),  # above the floor, 2.4 points below the stable
        ({"agreement": 0.9}, ["top-1 agreement with stable"]),
        ({"latency_ms": 0.11}, ["batch-1 latency"]),
        ({"value": math.nan}, ["accuracy floor", "drop against stable"]),
    ],
)
def test_each_gate_fails_on_its_own_breach(change: dict, failed: list[str]) -> None:
    assert _failed(Figures(**{**GOOD.__dict__, **change})) == failed


def test_without_a_stable_version_the_comparisons_pass_and_say_so() -> None:
    first = Figures("accuracy", 0.98, math.nan, math.nan, 0.05, math.nan)
    results = judge(first, ALL)
    assert all(g.passed for g in results)
    assert [g.observed for g in results][1:] == ["no stable version", "no stable version", "no baseline"]
    agreement_model = Figures("agreement", math.nan, math.nan, math.nan, 5.0, math.nan)
    assert all(g.passed for g in judge(agreement_model, Gates(min_metric=0.9)))


def test_unset_gates_are_not_judged() -> None:
    assert judge(Figures(**{**GOOD.__dict__, "value": 0.1}), Gates()) == []
