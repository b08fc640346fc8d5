"""`meshserve model release` without a live stack: a version that is not published is refused; one the
spec lacks is added (validated) and, locally, the command asks for a restart; on a cluster (`--apply`)
the addition is applied and the canary follows, here with the figures given, ending in one report."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from lifecycle.release import release, write_report
from lifecycle.store import LocalStore
from mesh import canary
from mesh.canary_analysis import Figures, Thresholds
from mesh.spec import read_yaml
from services.cli import main
from tests.lifecycle.helpers import RETRAINED, make_repository, make_spec

HEALTHY = Figures(
    stable_requests=200, canary_requests=200, stable_error_ratio=0.0, canary_error_ratio=0.0,
    stable_p95_s=0.002, canary_p95_s=0.0025, agreement=0.99, compared=150,
)  # fmt: skip


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repository(tmp_path)
    spec = make_spec(tmp_path, repo)
    assert main(["model", "publish", "digits", str(RETRAINED), "--spec", str(spec), "--note", "seed 11"]) == 0
    return repo, spec


def test_an_unpublished_version_or_a_second_canary_is_refused(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, spec = published
    before = spec.read_text()
    release_argv = ["model", "release", "digits", "--spec", str(spec), "--prometheus", "http://127.0.0.1:9"]
    assert main([*release_argv[:3], "7", *release_argv[3:]]) == 2
    assert "digits v7 is not in" in capsys.readouterr().err and spec.read_text() == before
    assert main([*release_argv[:3], "3", *release_argv[3:]]) == 2  # mesh.yaml's v2 is a 10% canary
    assert "v2 carries 10% besides the stable v1; one canary at a time" in capsys.readouterr().err
    assert spec.read_text() == before


def test_publish_release_adds_the_version_and_asks_for_a_restart_locally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repository(tmp_path)
    spec = make_spec(tmp_path, repo)
    canary.apply_to_file(spec, lambda d: canary.rollback(d, "digits"))
    argv = ["model", "publish", "digits", str(RETRAINED), "--spec", str(spec), "--release"]
    assert main([*argv, "--prometheus", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "digits v3 was added to" in err and "restart `meshserve up`" in err
    doc = read_yaml(spec)
    assert canary.current_weights(doc, "digits")[3] == 0
    assert dict(doc["models"]["digits"]["versions"][3]) == {"replicas": 1, "device": "cpu"}


def test_on_a_cluster_the_addition_is_applied_and_the_canary_follows(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, spec = published
    canary.apply_to_file(spec, lambda d: canary.rollback(d, "digits"))  # v2's 10% back to v1
    record = tmp_path / "applied.txt"
    script = "import os, sys, yaml; d = yaml.safe_load(open(os.environ['MESHSERVE_SPEC'])); "
    script += "open(sys.argv[1], 'a').write(repr(sorted(d['models']['digits']['versions'])) + chr(10))"
    apply = shlex.join([sys.executable, "-c", script, str(record)])
    logged: list[str] = []
    report = release(
        LocalStore(repo), spec, "digits", 3, steps=[50, 100], hold_s=30, scrape_interval_s=15,
        prometheus="http://127.0.0.1:9", limits=Thresholds(), apply=apply, log=logged.append,
        measure=lambda *_a: HEALTHY, sleep=lambda _s: None,
    )  # fmt: skip
    assert report.decision == "promoted" and report.stable == 1
    applied = record.read_text().splitlines()
    assert applied[0] == "[1, 2, 3]" and len(applied) == 4, "the addition, two steps and the promotion"
    assert canary.stable_version(read_yaml(spec), "digits") == 3
    json_path, md_path = write_report(report, tmp_path / "report")
    data = json.loads(json_path.read_text())
    assert data["decision"] == "promoted" and data["published"]["note"] == "seed 11"
    assert [s["weight"] for s in data["canary"]["steps"]] == [50, 100] and all(
        s["passed"] for s in data["canary"]["steps"]
    )
    markdown = md_path.read_text()
    assert "Decision: **promoted**" in markdown and "publish (seed 11)" in markdown
    assert "| top-1 agreement with stable |" in markdown and "| 50% | v3 | top-1 agreement |" in markdown
