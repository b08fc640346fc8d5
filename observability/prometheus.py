"""The local Prometheus: Debian's `prometheus` binary scraping the local stack.

Targets come from the supervisor's discovery table (`<run-dir>/endpoints.json`), translated into
Prometheus file_sd (`targets.json`, rewritten whenever the table changes; Prometheus watches it),
every target labelled `service`, `job` (= service, as prometheus-operator labels a
ServiceMonitor's targets) and `instance`. Rules are the ones `mesh.compile.alerts` generates
from the spec. Storage is a temp folder removed on exit.

It runs as one supervised process of `meshserve up` (services/local/observers.py adds it):
`python -m observability.prometheus --run-dir R --spec S --port P` keeps the targets file current and
runs the binary as its child, which dies with it. Without the binary the hook adds nothing and the stack
runs without Prometheus. The scrape interval is MESHSERVE_SCRAPE_INTERVAL (default 5s; the tests use 1s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from mesh.compile.alerts import write_rules
from mesh.spec import MeshSpec, load_spec
from services.discovery import ENDPOINTS_FILE, METRICS_PORT_META
from services.discovery.static import Table, parse_table

BINARY_ENV = "MESHSERVE_PROMETHEUS"  # path of the binary, or "off"
SCRAPE_INTERVAL_ENV = "MESHSERVE_SCRAPE_INTERVAL"
DEFAULT_SCRAPE_INTERVAL = "5s"  # the local stack's; canary analysis sizes its windows from it
URL_FILE = "prometheus/url"  # relative to the run dir: where tools (canary advance) find it
SERVICE = "prometheus"


# --------------------------------------------------------------------------- pure part


def file_sd_targets(table: Table) -> list[dict[str, Any]]:
    """The discovery table as Prometheus file_sd target groups (one group per instance).

    An endpoint whose metadata names a `metrics_port` (the gateway: its metrics are on its status
    port, not on the public one) is scraped there."""
    groups = []
    for service in sorted(table):
        for endpoint in table[service]:
            labels = {"service": service, "job": service, "instance": endpoint.instance}
            meta = dict(endpoint.meta)
            port = meta.pop(METRICS_PORT_META, None) or endpoint.port
            labels.update({f"meta_{k}": v for k, v in sorted(meta.items()) if k.isidentifier()})
            groups.append({"targets": [f"{endpoint.host}:{port}"], "labels": labels})
    return groups


def prometheus_config(
    targets_file: Path, rule_files: list[Path], scrape_interval: str = DEFAULT_SCRAPE_INTERVAL
) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- the edges


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class TargetSync:
    """Rewrites the file_sd file whenever the discovery table changes (a polling thread)."""

    def __init__(self, endpoints_file: Path, targets_file: Path, poll: float = 0.25) -> None:
        self.endpoints_file = endpoints_file
        self.targets_file = targets_file
        self.poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="prometheus-targets", daemon=True)

    def sync(self) -> None:
        try:
            table = parse_table(self.endpoints_file.read_bytes())
        except (OSError, ValueError):
            table = {}
        _write_json_atomic(self.targets_file, file_sd_targets(table))

    def _follow(self) -> None:
        seen = None
        while not self._stop.wait(self.poll):
            with contextlib.suppress(OSError):
                stat = self.endpoints_file.stat()
                identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if identity != seen:
                    seen = identity
                    self.sync()

    def start(self) -> None:
        self.sync()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _die_with_parent() -> None:
    """Child side of Popen: SIGTERM when the wrapper dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(run_dir: Path, spec: MeshSpec, port: int, scrape_interval: str, binary: str) -> int:
    """Run Prometheus for the stack in `run_dir` until SIGTERM/SIGINT; returns its exit code."""
    workdir = run_dir / "prometheus"
    workdir.mkdir(parents=True, exist_ok=True)
    rules = write_rules(spec, workdir / "rules.yml")
    targets = workdir / "targets.json"
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, [rules], scrape_interval), sort_keys=False))
    sync = TargetSync(run_dir / ENDPOINTS_FILE, targets)
    sync.start()
    data_dir = Path(tempfile.mkdtemp(prefix="prometheus-data-"))
    url = f"http://127.0.0.1:{port}"
    child = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ],
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    (run_dir / URL_FILE).write_text(url + "\n")
    print(f"prometheus at {url} (config {config})", flush=True)
    parent = os.getppid()
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return child.wait(timeout=1.0)
            if os.getppid() != parent:  # the supervisor died without stopping us (SIGKILL): follow it
                child.terminate()
    finally:
        sync.stop()
        (run_dir / URL_FILE).unlink(missing_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m observability.prometheus", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the stack's run dir (with endpoints.json)")
    parser.add_argument("--spec", type=Path, required=True, help="mesh.yaml (the alert rules come from its SLOs)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scrape-interval", default=os.environ.get(SCRAPE_INTERVAL_ENV, DEFAULT_SCRAPE_INTERVAL))
    parser.add_argument("--binary", default=None)
    args = parser.parse_args(argv)
    binary = args.binary or find_binary()
    if binary is None:
        print("no prometheus binary: install Debian's `prometheus` or set MESHSERVE_PROMETHEUS", file=sys.stderr)
        return 2
    return serve(
        args.run_dir.resolve(), load_spec(args.spec, check_repository=False), args.port, args.scrape_interval, binary
    )


if __name__ == "__main__":
    sys.exit(main())
