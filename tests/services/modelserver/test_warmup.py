"""Issue 8: a version that loads but cannot run must not take traffic. With `model_warmup` it is
refused before it serves (the old version keeps every request); without, its failures are 500s,
counted, and after a sustained failure rate it reads not ready and loses unversioned traffic."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.services.modelserver.onnx_models import affine, fails_every_run, write_config
from tests.services.modelserver.serverproc import Server, run_server, wait_for

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def index_row(server: Server, model: str, version: str) -> dict | None:
    rows = server.post("/v2/repository/index").json()
    return next((r for r in rows if r["name"] == model and r.get("version") == version), None)


def test_a_version_failing_its_warmup_never_takes_traffic(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    affine(repo / "m" / "1" / "model.onnx", seed=1)
    write_config(repo / "m", max_batch_size=4, model_warmup=[{"name": "zeros", "batch_size": 2, "count": 3}])
    with run_server(repo, "--poll-interval", "0.2", log_dir=tmp_path) as server:
        assert index_row(server, "m", "1")["state"] == "READY"  # its own warm-up passed
        answers: list[tuple[int, str]] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=server.base, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/v2/models/m/infer", json=GOOD)
                    answers.append((response.status_code, response.headers.get("x-model-version", "")))

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            wait_for(lambda: len(answers) >= 5, what="traffic flowing")
            fails_every_run(repo / "m" / "2" / "model.onnx")  # published as the newest version
            row = wait_for(lambda: (r := index_row(server, "m", "2")) and r["state"] == "UNAVAILABLE" and r, 60,
                           "v2 refused")  # fmt: skip
            seen = len(answers)
            wait_for(lambda: len(answers) >= seen + 5, what="traffic after the refusal")
        finally:
            stop.set()
            sender.join(30)
        assert "warm-up 'zeros' failed on run 1 of 3" in row["reason"], row
        assert server.metric("meshserve_model_load_failures_total", model="m", version="2") >= 1
        assert index_row(server, "m", "1")["state"] == "READY"
        assert server.get("/v2/health/ready").status_code == 200
        assert {a for a in answers} == {(200, "1")}, "every unversioned request answered by v1"


@pytest.mark.parametrize("warmup", [[{"name": "bad-dims", "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [5],
                                                                         "zero_data": True}}}]])  # fmt: skip
def test_a_warmup_sample_that_does_not_fit_fails_the_load_with_a_reason(tmp_path: Path, warmup: list) -> None:
    repo = tmp_path / "repo"
    affine(repo / "m" / "1" / "model.onnx", seed=1)
    write_config(repo / "m", max_batch_size=4, required=False, model_warmup=warmup)
    with run_server(repo, "--poll-interval", "0", log_dir=tmp_path) as server:
        row = index_row(server, "m", "1")
        assert row["state"] == "UNAVAILABLE"
        assert "warm-up 'bad-dims': input 'x' dims [5] do not fit the model's [4]" in row["reason"], row


def test_sustained_failures_are_500s_counted_and_take_the_version_out(tmp_path: Path) -> None:
    """No warm-up configured: v2 fails every run. Each failure is a 500 for its request and counted;
    past the failure share of the window v2 reads not ready and unversioned requests go to v1."""
    repo = tmp_path / "repo"
    affine(repo / "m" / "1" / "model.onnx", seed=1)
    fails_every_run(repo / "m" / "2" / "model.onnx")
    write_config(repo / "m", max_batch_size=4, version_policy={"all": {}})
    with run_server(repo, "--poll-interval", "0.5", log_dir=tmp_path) as server:
        labels = {"model": "m", "version": "2"}
        statuses = []
        while server.get("/v2/models/m/versions/2/ready").status_code == 200:
            response = server.post("/v2/models/m/infer", json=GOOD)
            statuses.append(response.status_code)
            assert response.status_code == 500 and "inference failed" in response.json()["error"], response.text
            assert len(statuses) <= 20, "a version failing every run must be taken out within the window"
        assert len(statuses) == 11  # more than half of the 20-execution window
        assert server.metric("meshserve_model_execution_failures_total", **labels) == 11
        assert server.metric("meshserve_model_healthy", **labels) == 0
        assert "failing: 11 of the last 11 executions failed" in index_row(server, "m", "2")["reason"]
        response = server.post("/v2/models/m/infer", json=GOOD)
        assert response.status_code == 200 and response.headers["x-model-version"] == "1"
        assert server.get("/v2/health/ready").status_code == 200  # v1 is healthy
        # the poll re-probes v2: still failing, still out
        wait_for(lambda: "still failing" in server.logs(), 30, "a probe of v2")
        assert server.get("/v2/models/m/versions/2/ready").status_code == 503


def test_readiness_follows_when_no_version_is_healthy(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fails_every_run(repo / "m" / "1" / "model.onnx")
    write_config(repo / "m", max_batch_size=4)
    with run_server(repo, "--poll-interval", "0", log_dir=tmp_path) as server:
        for _ in range(11):
            assert server.post("/v2/models/m/infer", json=GOOD).status_code == 500
        assert server.get("/v2/health/ready").status_code == 503
        assert server.get("/v2/models/m/ready").status_code == 503
        assert server.get("/v2/health/live").status_code == 200
