"""mesh/spec.py: the demo spec loads, and every kind of mistake is reported naming its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.spec import (
    DEFAULT_SPEC_PATH,
    SpecError,
    format_duration,
    load_spec,
    parse_duration,
    parse_version,
    read_yaml,
    validate_spec,
)


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    """The demo spec as plain data, for mutating one field per test."""
    return _plain(read_yaml(DEFAULT_SPEC_PATH))


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def problems_of(data: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        validate_spec(data, **kwargs)
    return caught.value.problems


def test_demo_spec_loads_with_its_repository() -> None:
    spec = load_spec()
    assert set(spec.models) == {"digits", "resnet"}
    assert spec.models["digits"].weights() == {1: 90, 2: 10}
    assert spec.models["digits"].resilience.retries.per_try_timeout == 0.5
    assert spec.models["resnet"].versions[1].device == "gpu"
    assert [name for name, _, _ in spec.stage_services()] == [
        "digits-classify-preprocess",
        "digits-classify-postprocess",
    ]
    assert spec.gateway.limits_for(spec.gateway.consumers[0]) == {"second": 2000}


def test_weights_must_sum_to_100(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["traffic"]["weights"] = {1: 80, 2: 10}
    (problem,) = problems_of(data)
    assert problem.startswith("models.digits.traffic.weights:")
    assert "sum to 90" in problem


def test_weight_for_unknown_version(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["traffic"]["weights"] = {1: 90, 3: 10}
    (problem,) = problems_of(data)
    assert problem.startswith("models.digits:")
    assert "traffic.weights names v3" in problem


def test_inline_api_key_is_refused(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["gateway"]["consumers"][0]["api_key"] = "s3cr3t"
    (problem,) = problems_of(data)
    assert problem.startswith("gateway.consumers.0.api_key:")
    assert "never written inline" in problem
    assert "s3cr3t" not in problem


def test_stage_naming_an_unknown_model(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["pipelines"]["digits-classify"]["stages"][1]["model"] = "mnist"
    (problem,) = problems_of(data)
    assert "pipelines.digits-classify.stages.predict" in problem
    assert "'mnist' does not exist" in problem


def test_gpu_versions_get_gpu_sized_defaults_and_explicit_resources_win(demo: dict[str, Any]) -> None:
    spec = validate_spec(demo)
    gpu, cpu = spec.models["resnet"].versions[1], spec.models["digits"].versions[2]
    assert (gpu.device, gpu.resources.limits["memory"], gpu.resources.requests["cpu"]) == ("gpu", "8Gi", "2")
    assert cpu.resources.limits["memory"] == "1Gi"
    data = copy.deepcopy(demo)
    data["models"]["resnet"]["versions"][1]["resources"] = {"limits": {"memory": "16Gi"}}
    assert validate_spec(data).models["resnet"].versions[1].resources.limits == {"memory": "16Gi"}


def test_two_pipelines_on_one_route(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["pipelines"]["digits-again"] = copy.deepcopy(data["pipelines"]["digits-classify"])
    (problem,) = problems_of(data)
    assert "pipelines.digits-again.route: /v1/digits:classify is already the route of pipelines.digits-classify" in (
        problem
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"api_key": {"env": "OTHER_KEY"}}, "username ['demo']"),
        ({"username": "second"}, "api_key.env ['MESHSERVE_API_KEY']"),
    ],
)
def test_consumers_are_distinct(demo: dict[str, Any], change: dict[str, Any], field: str) -> None:
    data = copy.deepcopy(demo)
    data["gateway"]["consumers"].append({**copy.deepcopy(data["gateway"]["consumers"][0]), **change})
    (problem,) = problems_of(data)
    assert problem.startswith("gateway:") and f"{field} appears more than once" in problem


def test_empty_override_header(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["traffic"]["header"] = ""
    (problem,) = problems_of(data)
    assert problem.startswith("models.digits.traffic.header:")


def test_stable_must_be_a_served_version(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["traffic"]["stable"] = 3
    (problem,) = problems_of(data)
    assert problem.startswith("models.digits:") and "traffic.stable is v3" in problem


def test_unknown_field(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["resilience"]["retrys"] = {"attempts": 3}
    (problem,) = problems_of(data)
    assert problem == "models.digits.resilience.retrys: unknown field: remove it or check its spelling"


def test_per_try_timeout_longer_than_timeout(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["resilience"]["retries"]["per_try_timeout"] = "3s"
    (problem,) = problems_of(data)
    assert problem.startswith("models.digits.resilience:")
    assert "per_try_timeout (3s) is longer than timeout (2s)" in problem


def test_version_missing_from_repository(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["versions"][7] = {"replicas": 1}
    problems = problems_of(data, base_dir=DEFAULT_SPEC_PATH.parent)
    assert len(problems) == 1
    assert "models.digits.versions: v7 is not in the model repository" in problems[0]


def test_repository_that_is_not_a_directory(demo: dict[str, Any], tmp_path: Path) -> None:
    data = copy.deepcopy(demo)
    data["repository"] = str(tmp_path / "nowhere")
    (problem,) = problems_of(data, base_dir=tmp_path)
    expected = f"(top level): repository: {tmp_path / 'nowhere'} is not a directory;"
    assert problem == f"{expected} point `repository` at the model repository"


def test_bad_duration_names_the_field(demo: dict[str, Any]) -> None:
    data = copy.deepcopy(demo)
    data["models"]["digits"]["resilience"]["timeout"] = "2 seconds"
    (problem,) = problems_of(data)
    assert problem.startswith("models.digits.resilience.timeout:")
    assert "'2 seconds' is not a duration" in problem


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {digits: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), (3, 3.0), ("0s", 0.0)]
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 s", "-1s", "1d", True, -2])
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_round_trip_in_milliseconds(millis: int) -> None:
    text = format_duration(millis / 1000)
    assert parse_duration(text) == pytest.approx(millis / 1000, abs=1e-9)
    assert text == format_duration(parse_duration(text))


@pytest.mark.parametrize(("value", "version"), [(2, 2), ("2", 2), ("v2", 2), ("V3", 3)])
def test_parse_version(value: Any, version: int) -> None:
    assert parse_version(value) == version


@pytest.mark.parametrize("bad", ["v0", "0", "two", "-1", ""])
def test_parse_version_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_version(bad)
