"""The issue's end-to-end proof on the real local stack (model servers, pipeline, gateway, Prometheus):

publish a retrained digits (passes, v3), its INT8 version (passes, v4, with measured figures), the
broken fixture (refused, nothing written), then the broken one again with the gates overridden (v5);
`release` adds a version the spec lacks and asks for a restart; with the stack up, `release 3` runs
the canary to promotion and `release 5` to rollback, each while traffic runs on the v2 infer route
(whose mirrored answers give the top-1 agreement) and on the business route, with zero failed requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mesh import canary
from mesh.spec import read_yaml
from services.cli import main
from services.local.supervisor import LocalStack
from tests.lifecycle.helpers import BAD, RETRAINED, make_repository, make_spec, snapshot
from tests.observability.livestack import (
    Driver,
    classify,
    infer,
    needs_prometheus,
    observed_stack,
    prometheus_url,
    query,
    until,
)

CANARY = [
    "--steps", "50,100", "--hold", "4s", "--scrape-interval", "1s", "--min-requests", "10", "--min-compared", "10",
    # Latency is judged loosely: on a shared 2-core machine replicas differ by tens of ms from run to run
    # (tests/mesh/test_canary_analysis.py pins the latency check itself).
    "--max-latency-ratio", "5", "--latency-slack", "250ms",
]  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The repository after the four publishes, and a spec that lists v3 and v5 (added by `release`)."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    repo = make_repository(tmp)
    spec = make_spec(tmp, repo)
    doc = read_yaml(spec)
    digits = doc["models"]["digits"]
    del digits["versions"][2]  # fewer processes on a small machine: v1 is stable, the releases add v3, v5
    digits["versions"][1]["replicas"] = 1
    digits["traffic"]["weights"] = {1: 100}
    digits["traffic"]["mirror"] = {"version": 1, "percentage": 0}
    # This judges the release, not timeouts: a scheduling stall on a loaded machine must not become a 504.
    digits["resilience"]["timeout"] = "20s"
    digits["resilience"]["retries"]["per_try_timeout"] = "10s"
    spec.write_text(canary.dump(doc))

    def cli(*args: str) -> int:
        return main(["model", *args, "--spec", str(spec)])

    assert cli("publish", "digits", str(RETRAINED), "--note", "retrained, seed 11") == 0
    assert cli("optimize", "digits", "--from", "3", "--int8") == 0
    before = snapshot(repo)
    assert cli("publish", "digits", str(BAD)) == 1
    assert snapshot(repo) == before, "the refused candidate wrote nothing"
    assert cli("publish", "digits", str(BAD), "--force", "--note", "gates overridden for the rollback drill") == 0
    for version in ("3", "5"):  # not in the spec yet: added with one replica, weight 0; restart needed
        assert cli("release", "digits", version, "--prometheus", "http://127.0.0.1:9") == 2
    assert sorted(canary.current_weights(read_yaml(spec), "digits").items()) == [(1, 100), (3, 0), (5, 0)]
    return repo, spec


def test_the_publishes_recorded_lineage_figures_and_gates(published: tuple[Path, Path]) -> None:
    repo, _ = published
    meta = {v: yaml.safe_load((repo / "digits" / str(v) / "metadata.yaml").read_text()) for v in (3, 4, 5)}
    assert meta[3]["parent"] is None and meta[3]["evaluation"]["passed"] is True
    assert meta[4]["parent"] == 3 and meta[4]["produced_by"]["how"] == "optimize: int8 static"
    assert meta[4]["evaluation"]["passed"] is True and meta[4]["performance"]["baseline_version"] == 3
    assert meta[4]["performance"]["stable_version"] == 1 and meta[4]["performance"]["stable"]["latency_b1_ms"] > 0
    assert meta[4]["performance"]["candidate"]["latency_b1_ms"] > 0
    assert meta[5]["evaluation"]["overridden"] is True
    assert not (repo / "digits" / "6").exists()


@pytest.fixture(scope="module")
def stack(published: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    _, spec = published
    with observed_stack(tmp_path_factory.mktemp("run"), spec) as running:
        until(lambda: len(query(prometheus_url(running), "up == 1")) >= len(running.processes) - 1, 60, "targets up")
        yield running


def _release(stack: LocalStack, version: int, report: Path) -> tuple[int, dict, str, dict, dict]:
    argv = [
        "model", "release", "digits", str(version), "--spec", str(stack.spec_path),
        "--prometheus", prometheus_url(stack), "--report", str(report), *CANARY,
    ]  # fmt: skip
    with Driver(stack, infer, rate=40, limit=3000) as v2, Driver(stack, classify, rate=15, limit=1000) as business:
        code = main(argv)
    data = json.loads((report / "release.json").read_text())
    return code, data, (report / "release.md").read_text(), v2.codes, business.codes


@needs_prometheus
@pytest.mark.timeout(240)
def test_release_promotes_the_good_version_and_rolls_back_the_bad_one(stack: LocalStack, tmp_path: Path) -> None:
    code, data, markdown, v2_codes, business_codes = _release(stack, 3, tmp_path / "good")
    assert code == 0 and data["decision"] == "promoted", markdown
    assert [s["weight"] for s in data["canary"]["steps"]] == [50, 100]
    assert all(s["figures"]["agreement"] >= 0.95 for s in data["canary"]["steps"])
    assert data["published"]["gates_passed"] is True and data["published"]["gates"][0]["name"] == "signature"
    assert "Decision: **promoted**" in markdown and "Publish gates" in markdown and "top-1 agreement" in markdown
    assert canary.stable_version(read_yaml(stack.spec_path), "digits") == 3
    assert set(v2_codes) == {200} and set(business_codes) == {200}, (v2_codes, business_codes)
    assert sum(business_codes.values()) > 20, "the business route carried traffic during the release"

    code, data, markdown, v2_codes, business_codes = _release(stack, 5, tmp_path / "bad")
    assert code == 1 and data["decision"] == "rolled back", markdown
    assert len(data["canary"]["steps"]) == 1
    failed = [c["name"] for c in data["canary"]["steps"][0]["checks"] if not c["passed"]]
    assert failed == ["top-1 agreement"], data["canary"]["steps"][0]
    assert data["published"]["gates_overridden"] is True and "**overridden**" in markdown
    doc = read_yaml(stack.spec_path)
    assert canary.stable_version(doc, "digits") == 3 and canary.current_weights(doc, "digits")[5] == 0
    assert set(v2_codes) == {200} and set(business_codes) == {200}, (v2_codes, business_codes)
