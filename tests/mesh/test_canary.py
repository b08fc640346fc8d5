"""Canary edits of mesh.yaml: the pure edits, the file edge (validate before write, diff) and the CLI.

`spec_copy` (tests/mesh/conftest.py) is a writable copy of the demo spec whose repository resolves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh import canary
from mesh.spec import DEFAULT_SPEC_PATH, SpecError, load_spec, read_yaml


def test_set_gives_the_rest_to_the_other_version(spec_copy: Path) -> None:
    diff = canary.apply_to_file(spec_copy, lambda d: canary.set_weights(d, "digits", {2: 25}))
    assert load_spec(spec_copy).models["digits"].weights() == {1: 75, 2: 25}
    text = spec_copy.read_text()
    # the same line, its comment and the rest of the file untouched
    assert "      weights: {1: 75, 2: 25}     # `meshserve canary set digits v2=25` edits this line\n" in text
    assert "# meshserve: the single source of truth." in text
    assert text.replace("{1: 75, 2: 25}", "{1: 90, 2: 10}") == DEFAULT_SPEC_PATH.read_text()
    assert "-      weights: {1: 90, 2: 10}" in diff
    assert "+      weights: {1: 75, 2: 25}" in diff
    assert diff.startswith(f"--- a/{spec_copy}\n+++ b/{spec_copy}\n")


def test_promote_and_rollback(spec_copy: Path) -> None:
    canary.apply_to_file(spec_copy, lambda d: canary.set_weights(d, "digits", {2: 40}))
    assert canary.stable_version(read_yaml(spec_copy), "digits") == 1
    canary.apply_to_file(spec_copy, lambda d: canary.rollback(d, "digits"))
    assert load_spec(spec_copy).models["digits"].weights() == {1: 100, 2: 0}
    canary.apply_to_file(spec_copy, lambda d: canary.promote(d, "digits", 2))
    assert load_spec(spec_copy).models["digits"].weights() == {1: 0, 2: 100}
    assert "# a request with `x-model-version: 2` always reaches v2" in spec_copy.read_text()


def test_rollback_lands_on_the_stable_version_whatever_the_canary_weight(spec_copy: Path) -> None:
    """The stable version is written in the spec, not guessed from weights: a canary at 60% still rolls back."""
    canary.apply_to_file(spec_copy, lambda d: canary.set_weights(d, "digits", {2: 60}))
    assert canary.stable_version(read_yaml(spec_copy), "digits") == 1
    canary.apply_to_file(spec_copy, lambda d: canary.rollback(d, "digits"))
    assert load_spec(spec_copy).models["digits"].weights() == {1: 100, 2: 0}


def test_promote_moves_the_stable_version_and_a_later_rollback_keeps_it(spec_copy: Path) -> None:
    canary.apply_to_file(spec_copy, lambda d: canary.promote(d, "digits", 2))
    assert load_spec(spec_copy).models["digits"].traffic.stable == 2
    assert "      stable: 2                   # where `canary rollback` lands" in spec_copy.read_text()
    canary.apply_to_file(spec_copy, lambda d: canary.set_weights(d, "digits", {1: 30}))  # v1 is now the canary
    assert load_spec(spec_copy).models["digits"].weights() == {1: 30, 2: 70}
    canary.apply_to_file(spec_copy, lambda d: canary.rollback(d, "digits"))
    assert load_spec(spec_copy).models["digits"].weights() == {1: 0, 2: 100}


def test_without_a_written_stable_it_is_the_lowest_served_version() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    del doc["models"]["digits"]["traffic"]["stable"]
    doc["models"]["digits"]["traffic"]["weights"] = {1: 40, 2: 60}
    assert canary.stable_version(doc, "digits") == 1
    new = canary.promote(doc, "digits", 2)
    assert canary.dump(new).count("stable: 2") == 1  # written next to the weights once promoted


def test_three_versions_the_stable_absorbs_the_difference() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["models"]["digits"]["versions"][3] = {"replicas": 1}
    doc["models"]["digits"]["traffic"]["weights"] = {1: 80, 2: 10, 3: 10}
    new = canary.set_weights(doc, "digits", {3: 30})
    assert canary.current_weights(new, "digits") == {1: 60, 2: 10, 3: 30}
    assert canary.current_weights(doc, "digits") == {1: 80, 2: 10, 3: 10}  # the input is not mutated


def test_a_model_without_traffic_gets_a_weights_block() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    new = canary.promote(doc, "resnet", 1)
    assert canary.dump(new).count("weights: {1: 100}") == 1


@pytest.mark.parametrize(
    ("assignment", "message"),
    [({1: 50, 2: 60}, "weights (v1=50, v2=60) sum to 110; they must sum to 100")],
)
def test_invalid_weights_are_rejected_with_the_spec_message_and_nothing_written(
    spec_copy: Path, assignment: dict[int, int], message: str
) -> None:
    before = spec_copy.read_text()
    with pytest.raises(SpecError) as err:
        canary.apply_to_file(spec_copy, lambda d: canary.set_weights(d, "digits", assignment))
    assert message in str(err.value)
    assert "models.digits.traffic.weights" in str(err.value)
    assert spec_copy.read_text() == before


@pytest.mark.parametrize(
    ("assignment", "message"),
    [({2: 150}, "v2=150: a weight is a percentage from 0 to 100"), ({2: -5}, "v2=-5: a weight is a percentage")],
)
def test_an_out_of_range_weight_is_named_as_typed_not_as_the_derived_one(
    spec_copy: Path, assignment: dict[int, int], message: str
) -> None:
    """`set digits v2=150` used to complain about v1's derived -50."""
    before = spec_copy.read_text()
    with pytest.raises(canary.CanaryError) as err:
        canary.apply_to_file(spec_copy, lambda d: canary.set_weights(d, "digits", assignment))
    assert message in str(err.value) and "v1" not in str(err.value)
    assert spec_copy.read_text() == before


def test_named_weights_over_100_with_a_version_left_to_absorb_the_rest() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    doc["models"]["digits"]["versions"][3] = {"replicas": 1}
    with pytest.raises(canary.CanaryError, match="v2=60 v3=60: the weights you named add up to 120"):
        canary.set_weights(doc, "digits", {2: 60, 3: 60})


def test_weight_to_a_version_without_replicas_is_rejected(spec_copy: Path) -> None:
    spec_copy.write_text(spec_copy.read_text().replace("        replicas: 1\n", "        replicas: 0\n", 1))
    with pytest.raises(SpecError, match="v2 but it has 0 replicas"):
        canary.apply_to_file(spec_copy, lambda d: canary.set_weights(d, "digits", {2: 20}))


def test_unknown_model_or_version() -> None:
    doc = read_yaml(DEFAULT_SPEC_PATH)
    with pytest.raises(canary.CanaryError, match="no version v7"):
        canary.set_weights(doc, "digits", {7: 10})
    with pytest.raises(canary.CanaryError, match="model 'nope' is not in the spec"):
        canary.promote(doc, "nope", 1)


@pytest.mark.parametrize(("text", "expected"), [("v2=10", (2, 10)), ("2=0", (2, 0)), ("V3=100", (3, 100))])
def test_parse_assignment(text: str, expected: tuple[int, int]) -> None:
    assert canary.parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["v2", "x=10", "v2=ten", "v0=5", "v2=101", "v2=-1"])
def test_parse_assignment_rejects(text: str) -> None:
    with pytest.raises(canary.CanaryError):
        canary.parse_assignment(text)


def test_cli(spec_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main

    assert main(["canary", "--spec", str(spec_copy), "set", "digits", "v2=30"]) == 0
    assert "+      weights: {1: 70, 2: 30}" in capsys.readouterr().out
    assert main(["canary", "--spec", str(spec_copy), "set", "digits", "v2=130"]) == 2
    err = capsys.readouterr().err
    assert "meshserve canary set: 'v2=130': 130 is not a weight: a weight is a percentage from 0 to 100" in err
    assert "v1" not in err
    assert main(["canary", "--spec", str(spec_copy), "rollback", "digits"]) == 0
    assert "+      weights: {1: 100, 2: 0}" in capsys.readouterr().out
    assert main(["canary", "--spec", str(spec_copy), "rollback", "digits"]) == 0
    assert "no change" in capsys.readouterr().out


def test_spec_option_after_the_op_and_the_project_from_the_working_directory(
    spec_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`canary set --spec X` works as `canary --spec X set` does; without either, the project found from the
    working directory is edited (the file the stack started there watches), never the installed package's."""
    from services.cli import main

    assert main(["canary", "set", "--spec", str(spec_copy), "digits", "v2=20"]) == 0
    assert "+      weights: {1: 80, 2: 20}" in capsys.readouterr().out
    packaged = DEFAULT_SPEC_PATH.read_text()
    monkeypatch.delenv("MESHSERVE_SPEC", raising=False)
    inside = spec_copy.parent.parent / "notes"
    inside.mkdir()
    monkeypatch.chdir(inside)  # a folder inside the project
    assert main(["canary", "set", "digits", "v2=40"]) == 0
    assert "{1: 60, 2: 40}" in spec_copy.read_text()
    assert DEFAULT_SPEC_PATH.read_text() == packaged
    assert "note:" not in capsys.readouterr().err
    current = spec_copy.parent.parent / "runs" / "current"  # a stack started here from another spec
    current.mkdir(parents=True)
    (current / "stack.json").write_text('{"spec": "/elsewhere/mesh.yaml", "processes": []}')
    assert main(["canary", "set", "digits", "v2=30"]) == 0
    assert f"note: the local stack in runs/current watches /elsewhere/mesh.yaml, not {spec_copy}" in (
        capsys.readouterr().err
    )
