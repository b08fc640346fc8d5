"""The local Prometheus config: file_sd from the discovery table, and a config promtool accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mesh.compile.alerts import write_rules
from mesh.spec import load_spec
from observability.prometheus import file_sd_targets, prometheus_config
from services.discovery import Endpoint


def test_file_sd_labels_each_instance_with_its_service() -> None:
    table = {
        "digits-v1": [
            Endpoint("digits-v1", "digits-v1-0", "127.0.0.1", 4001, {"version": "1"}),
            Endpoint("digits-v1", "digits-v1-1", "127.0.0.1", 4002, {"version": "1"}),
        ],
        "gateway": [Endpoint("gateway", "gateway-0", "127.0.0.1", 8080)],
    }
    groups = file_sd_targets(table)
    assert groups[0] == {
        "targets": ["127.0.0.1:4001"],
        "labels": {"service": "digits-v1", "job": "digits-v1", "instance": "digits-v1-0", "meta_version": "1"},
    }
    assert [g["targets"][0] for g in groups] == ["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:8080"]
    assert file_sd_targets({}) == []


def test_the_gateway_is_scraped_on_its_status_port() -> None:
    """Its public port serves no /metrics (issue 8): the endpoint's metrics_port is the target."""
    table = {"gateway": [Endpoint("gateway", "gateway-0", "127.0.0.1", 8080, {"metrics_port": "8100"})]}
    assert file_sd_targets(table) == [
        {"targets": ["127.0.0.1:8100"], "labels": {"service": "gateway", "job": "gateway", "instance": "gateway-0"}}
    ]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make system-deps)")
def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    rules = write_rules(load_spec(check_repository=False), tmp_path / "rules.yml")
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, [rules], "1s")))
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
