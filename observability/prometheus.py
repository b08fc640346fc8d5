"""The local Prometheus: Debian's `prometheus` binary scraping the local stack.

Targets come from the supervisor's discovery table (`<run-dir>/endpoints.json`), translated into
Prometheus file_sd (`targets.json`, rewritten whenever the table changes; Prometheus watches it),
every target labelled `service`, `job` (= service, as prometheus-operator labels a
ServiceMonitor's targets) and `instance`. Rules are the ones `observability.alerts` generates
from the spec. Storage is a temp folder that goes away with the process.

`start_local_prometheus(run_dir, spec)` is the supervisor's hook; it returns None when the
binary is absent so `meshserve up` runs without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mesh.spec import MeshSpec
from observability.alerts import write_rules
from services.discovery import ENDPOINTS_FILE
from services.discovery.static import Table, parse_table

BINARY_ENV = "MESHSERVE_PROMETHEUS"  # path of the binary, or "off"
URL_FILE = "prometheus/url"  # relative to the run dir: where tools (canary advance) find it


def file_sd_targets(table: Table) -> list[dict[str, Any]]:
    """The discovery table as Prometheus file_sd target groups (one group per instance)."""
    groups = []
    for service in sorted(table):
        for endpoint in table[service]:
            labels = {"service": service, "job": service, "instance": endpoint.instance}
            labels.update({f"meta_{k}": v for k, v in sorted(endpoint.meta.items()) if k.isidentifier()})
            groups.append({"targets": [f"{endpoint.host}:{endpoint.port}"], "labels": labels})
    return groups


def prometheus_config(targets_file: Path, rule_files: list[Path], scrape_interval: str = "5s") -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "meshserve",
                "metrics_path": "/metrics",
                # services label their own series (`service` on the HTTP metrics, `version` on the
                # model server's): keep them rather than renaming them exported_*.
                "honor_labels": True,
                "scrape_timeout": scrape_interval,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "30s"}],
            }
        ],
    }


def find_binary() -> str | None:
    configured = os.environ.get(BINARY_ENV)
    if configured == "off":
        return None
    return shutil.which(configured or "prometheus")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


@dataclass
class LocalPrometheus:
    """A running Prometheus process and the thread that keeps its targets file current."""

    url: str
    process: subprocess.Popen
    workdir: Path
    data_dir: Path
    endpoints_file: Path
    targets_file: Path
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sync_targets(self) -> None:
        try:
            table = parse_table(self.endpoints_file.read_bytes())
        except (OSError, ValueError):
            table = {}
        groups = file_sd_targets(table)
        if not self.targets_file.exists() or json.loads(self.targets_file.read_text()) != groups:
            _write_json_atomic(self.targets_file, groups)

    def _follow(self, poll: float) -> None:
        seen = None
        while not self._stop.wait(poll):
            with contextlib.suppress(OSError):
                stat = self.endpoints_file.stat()
                identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if identity != seen:
                    seen = identity
                    self.sync_targets()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.process.returncode}; see {self.workdir}/prometheus.log"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus at {self.url} not ready after {timeout}s")

    def stop(self) -> None:
        self._stop.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        (self.workdir / "url").unlink(missing_ok=True)


def start_prometheus(
    run_dir: Path,
    spec: MeshSpec,
    *,
    scrape_interval: str = "5s",
    binary: str | None = None,
    port: int = 0,
    log_file: Path | None = None,
) -> LocalPrometheus:
    """Start Prometheus for the stack whose discovery table is `<run_dir>/endpoints.json`."""
    binary = binary or find_binary()
    if binary is None:
        raise FileNotFoundError("no prometheus binary (install Debian's `prometheus`, or set MESHSERVE_PROMETHEUS)")
    run_dir = Path(run_dir)
    workdir = run_dir / "prometheus"
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=workdir))
    rules = write_rules(spec, workdir / "rules.yml")
    targets = workdir / "targets.json"
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, [rules], scrape_interval), sort_keys=False))
    port = port or _free_port()
    log = open(log_file or workdir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    prom = LocalPrometheus(f"http://127.0.0.1:{port}", process, workdir, data_dir, run_dir / ENDPOINTS_FILE, targets)
    (run_dir / URL_FILE).write_text(prom.url + "\n")
    prom.sync_targets()
    prom._thread = threading.Thread(target=prom._follow, args=(0.25,), name="prometheus-targets", daemon=True)
    prom._thread.start()
    return prom


def start_local_prometheus(run_dir: Path, spec: MeshSpec, *, scrape_interval: str = "5s") -> LocalPrometheus | None:
    """The supervisor's hook: Prometheus when the binary is present (ready, URL in `.url`), else None."""
    if find_binary() is None:
        return None
    prom = start_prometheus(run_dir, spec, scrape_interval=scrape_interval)
    try:
        prom.wait_ready()
    except Exception:
        prom.stop()
        raise
    return prom
