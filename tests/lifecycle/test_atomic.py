"""Atomic publishing: a publisher killed (SIGKILL) half-way through the model file or just before the
rename leaves the repository's versions as they were, and a model server polling the repository
every 100 ms never loads (or fails to load) a partial version; the next publish removes the dead
publisher's staging folder and its version is picked up by the same server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifecycle.store import PAUSE_ENV, STAGING_PREFIX, LocalStore
from tests.lifecycle.helpers import REPO, RETRAINED, make_repository, make_spec, snapshot
from tests.services.modelserver.serverproc import run_server, wait_for


def versions_in_index(server) -> set[str]:
    return {r["version"] for r in server.post("/v2/repository/index").json() if r["name"] == "digits"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("checkpoint", ["partial-model", "staged"])
def test_a_publisher_killed_mid_write_leaves_no_version(tmp_path: Path, checkpoint: str) -> None:
    repo = make_repository(tmp_path)
    spec = make_spec(tmp_path, repo)
    marker = tmp_path / "paused"
    with run_server(repo, "--poll-interval", "0.1", log_dir=tmp_path) as server:
        assert versions_in_index(server) == {"1", "2"}
        versions_before = LocalStore(repo).versions("digits")
        files_before = snapshot(repo)
        publisher = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "model", "publish", "--spec", str(spec), "digits", str(RETRAINED)],
            cwd=REPO,
            env={**os.environ, PAUSE_ENV: f"{checkpoint}:{marker}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(
                lambda: marker.exists() or publisher.poll() is not None, 90, "the publisher to reach " + checkpoint
            )
            assert publisher.poll() is None, publisher.stderr.read().decode()
            staging = list((repo / "digits").glob(f"{STAGING_PREFIX}*"))
            assert len(staging) == 1 and (staging[0] / "model.onnx").exists(), "it is mid-write"
            if checkpoint == "partial-model":
                assert (staging[0] / "model.onnx").stat().st_size < RETRAINED.stat().st_size
            # The server polls ten times a second while the publisher sits mid-write.
            seen: set[str] = set()
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                seen |= versions_in_index(server)
                time.sleep(0.05)
            os.kill(publisher.pid, signal.SIGKILL)
        finally:
            publisher.kill()
            publisher.wait()
        time.sleep(0.3)  # three more polls after the kill: still nothing new (asserted just below)
        seen |= versions_in_index(server)
        assert seen == {"1", "2"}, "the server never saw a third version"
        assert server.metric("meshserve_model_load_failures_total", model="digits") == 0
        assert LocalStore(repo).versions("digits") == versions_before
        after = snapshot(repo)
        leftovers = {k for k in after if k.startswith(f"digits/{STAGING_PREFIX}")}
        assert {k: v for k, v in after.items() if k not in leftovers} == files_before

        # The next publish clears the dead publisher's staging folder, and the server loads its version.
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "model", "publish", "--spec", str(spec), "digits", str(RETRAINED)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert not list((repo / "digits").glob(f"{STAGING_PREFIX}*"))
        wait_for(lambda: "3" in versions_in_index(server), 30, "the server to load v3")
        assert server.metric("meshserve_model_load_failures_total", model="digits") == 0


def test_a_version_number_taken_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    from lifecycle.store import VersionExists

    repo = make_repository(tmp_path)
    store = LocalStore(repo)
    store.write_version("digits", 3, {"model.onnx": b"first", "metadata.yaml": b"a: 1\n"})
    with pytest.raises(VersionExists):
        store.write_version("digits", 3, {"model.onnx": b"second", "metadata.yaml": b"a: 2\n"})
    assert (repo / "digits" / "3" / "model.onnx").read_bytes() == b"first"
    assert not list((repo / "digits").glob(f"{STAGING_PREFIX}*")), "the loser's staging folder is removed"
