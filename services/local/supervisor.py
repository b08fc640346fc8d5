"""The supervisor: starts every process of the plan, waits until all are ready, keeps them running.

Usable as a library (end-to-end tests start the real stack in-process with it):

    with LocalStack("mesh/mesh.yaml", run_dir=tmp, gateway_port=free_port()) as stack:
        stack.url("gateway")

Each process logs to `<run-dir>/logs/<instance>.log`; the supervisor's own lines go to
`<run-dir>/logs/supervisor.log`. An instance enters discovery when its readiness endpoint answers
200 and leaves it when it exits; a crashed process is restarted on the same port (so discovery stays
valid) after an exponential backoff. `stop()` takes everything out of discovery, sends SIGTERM (the
gateway first, so nothing new comes in), waits `grace` seconds, then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from mesh.spec import MeshSpec, load_spec
from services.common import settings
from services.common.lifecycle import SUPERVISOR_PID_ENV
from services.common.traffic import CLIENT, TRAFFIC_ENV
from services.discovery import DISCOVERY_ENV, ENDPOINTS_FILE, RUN_DIR_ENV, Discovery, Endpoint, from_env
from services.local.plan import ProcessSpec, plan_processes

log = logging.getLogger("meshserve.supervisor")

REPO_ROOT = Path(__file__).resolve().parents[2]  # on PYTHONPATH for the children (a source checkout)
STACK_FILE = settings.STACK_FILE
API_KEYS_FILE = "api-keys.env"  # generated keys, mode 0600: `up` prints `source` of it, not the key
LOG_TAIL_LINES = 20
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # seconds ready before the backoff resets


class StackError(RuntimeError):
    """The stack could not start; the message names the process and its log."""


# What `up` shows while the stack starts: progress(managed, state) with state "starting" or "ready".
Progress = Callable[["Managed", str], None]


_HANDED_OUT: set[int] = set()
_LOW_PORT = 20000  # where the search starts; below the kernel's ephemeral range (32768-60999 by default)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port that is free now, outside the kernel's ephemeral range and never handed out before.

    `bind(0)` would hand out an ephemeral port: between this call and the service binding it, any
    outgoing connection (a health probe, a load generator) may take it as its local port, and two calls
    may return the same one. A stack plans ~20 ports before starting anything, so both happened.
    """
    low, high = _ephemeral_range()
    top = low if low - _LOW_PORT >= 1000 else 65536  # no room below it: above the range instead
    start = _LOW_PORT if top == low else high + 1
    for _ in range(2000):
        port = secrets.randbelow(top - start) + start
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:  # everything tried was taken: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def default_run_dir(root: Path) -> Path:
    return root / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def backoff(failures: int) -> float:
    """Seconds before restart number `failures` (1, 2, ...): 0.5, 1, 2, 4 ... capped at 30."""
    return min(BACKOFF_BASE * 2 ** max(failures - 1, 0), BACKOFF_MAX)


@dataclass
class Managed:
    """One process and what the supervisor knows about it."""

    spec: ProcessSpec
    log_path: Path
    proc: subprocess.Popen | None = None
    ready: bool = False
    ready_since: float = 0.0
    failures: int = 0  # consecutive crashes since it was last stable
    restarts: int = 0
    restart_at: float | None = None
    history: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> Endpoint:
        s = self.spec
        return Endpoint(s.service, s.instance, "127.0.0.1", s.port, dict(s.meta))


class LocalStack:
    """The local mesh from a spec: `start()` / `stop()`, or a context manager."""

    def __init__(
        self,
        spec_path: str | Path,
        *,
        run_dir: str | Path | None = None,
        gateway_port: int | None = None,
        with_gateway: bool = True,
        extra_processes: Iterable[ProcessSpec] = (),
        env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
        grace: float = 10.0,
        progress: Progress | None = None,
    ) -> None:
        self.spec_path = Path(spec_path).resolve()
        self.spec: MeshSpec = load_spec(self.spec_path)
        self.project = settings.project_root()  # the children's working directory; runs/ lives here
        self.run_dir = Path(run_dir).absolute() if run_dir else default_run_dir(self.project / settings.RUNS_DIR)
        self._link_current = run_dir is None
        self.progress = progress or (lambda managed, state: None)
        self.log_dir = self.run_dir / "logs"
        self.ready_timeout = ready_timeout
        self.grace = grace
        self.env = self._child_env(env or {})
        self.api_keys = self._api_keys()
        specs = plan_processes(
            self.spec, self.spec_path, free_port, gateway_port=gateway_port, with_gateway=with_gateway
        )
        self.processes = [Managed(p, self.log_dir / f"{p.instance}.log") for p in (*specs, *extra_processes)]
        self.discovery: Discovery | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._http = httpx.Client(timeout=1.0)

    def add_processes(self, specs: Iterable[ProcessSpec]) -> None:
        """Extra processes (before start): observability adds Prometheus or a collector here."""
        self.processes += [Managed(p, self.log_dir / f"{p.instance}.log") for p in specs]

    # ------------------------------------------------------------------ environment

    def _child_env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {**os.environ, **extra}
        env.setdefault(DISCOVERY_ENV, f"static:{self.run_dir / ENDPOINTS_FILE}")
        env[RUN_DIR_ENV] = str(self.run_dir)
        env[settings.SPEC_ENV] = str(self.spec_path)
        env[settings.LOG_FORMAT_ENV] = "json"  # the children log to files: always JSON, whatever the shell says
        env[settings.EXIT_ON_LOAD_FAILURE_ENV] = "1"  # a model that cannot load stops `up` at once, with its error
        env[TRAFFIC_ENV] = CLIENT  # no Istio locally: the business API splits (services/common/traffic.py)
        if (REPO_ROOT / "pyproject.toml").is_file():  # a source checkout: children import this tree
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env[SUPERVISOR_PID_ENV] = str(os.getpid())  # children follow us out (services/common/lifecycle.py)
        return env

    def _api_keys(self) -> dict[str, tuple[str, str, bool]]:
        """consumer -> (env var, key, generated?); an unset key is generated and exported to the children."""
        keys = {}
        for consumer in self.spec.gateway.consumers:
            var = consumer.api_key.env
            if not var:
                continue
            generated = not self.env.get(var)
            if generated:
                self.env[var] = secrets.token_urlsafe(24)
            keys[consumer.username] = (var, self.env[var], generated)
        return keys

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        """Start everything and wait until every process is ready (StackError names the one that is not).

        Every port is checked first: a port held by another process fails here, naming it and its holder.
        """
        from services.local.ports import taken

        problems = taken((m.spec.instance, m.spec.port) for m in self.processes)
        if problems:
            hint = "stop that process, or pick another port (`meshserve up --gateway-port N`)"
            raise StackError("cannot start the local stack:\n  " + "\n  ".join(problems) + f"\n{hint}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._setup_supervisor_log()
        if self._link_current:
            current = self.run_dir.parent / "current"
            with contextlib.suppress(OSError):
                current.unlink(missing_ok=True)
                current.symlink_to(self.run_dir.name)
        self.discovery = from_env(self.env)
        endpoints_file = self.run_dir / ENDPOINTS_FILE
        if not endpoints_file.exists():
            endpoints_file.write_bytes(b'{"services": {}}')
        self._write_api_keys()
        try:
            for managed in self.processes:
                self._spawn(managed)
            self._wait_all_ready()
        except BaseException:
            self.stop()
            raise
        self._monitor = threading.Thread(target=self._watch, name="meshserve-supervisor", daemon=True)
        self._monitor.start()
        log.info("stack ready: %d processes, run dir %s", len(self.processes), self.run_dir)
        return self

    def _write_api_keys(self) -> None:
        """Generated keys go to a 0600 file the user sources (the terminal shows them only when asked)."""
        generated = [(var, key) for var, key, new in self.api_keys.values() if new]
        if not generated:
            return
        path = self.run_dir / API_KEYS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"export {var}={key}\n" for var, key in generated)

    def _setup_supervisor_log(self) -> None:
        import ecs_logging

        handler = logging.FileHandler(self.log_dir / "supervisor.log")
        handler.setFormatter(ecs_logging.StdlibFormatter(extra={"service": {"name": "supervisor"}}))  # files: JSON
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._log_handler = handler

    def _spawn(self, managed: Managed) -> None:
        spec = managed.spec
        env = {**self.env, **spec.env, "MESHSERVE_SERVICE_NAME": spec.service}
        with managed.log_path.open("ab") as out:
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            out.write(f"--- {stamp} supervisor: starting {spec.instance} on port {spec.port}\n".encode())
            out.flush()
            managed.proc = subprocess.Popen(
                spec.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.project,
                start_new_session=True,  # a Ctrl-C reaches the supervisor only; it drains the children
            )
        managed.ready = False
        managed.restart_at = None
        self._write_stack_file()
        self.progress(managed, "starting")

    def _probe(self, managed: Managed) -> bool:
        try:
            return self._http.get(managed.spec.health_url).status_code == 200
        except httpx.HTTPError:
            return False

    def _mark_ready(self, managed: Managed) -> None:
        managed.ready = True
        managed.ready_since = time.monotonic()
        if managed.spec.discoverable and self.discovery is not None:
            self.discovery.register(managed.endpoint, managed.spec.health_path)
        self.progress(managed, "ready")

    def _wait_all_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        waiting = list(self.processes)
        while waiting:
            for managed in list(waiting):
                code = managed.proc.poll() if managed.proc else None
                if code is not None:
                    raise StackError(
                        f"{managed.spec.service}: {managed.spec.instance} exited with code {code} before it was "
                        f"ready. The end of its log, {managed.log_path}:\n{log_tail(managed.log_path)}"
                    )
                if self._probe(managed) and managed.proc.poll() is None:
                    self._mark_ready(managed)
                    waiting.remove(managed)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{m.spec.instance} (log: {m.log_path})" for m in waiting)
                tails = "".join(f"\n--- {m.spec.instance}:\n{log_tail(m.log_path, 5)}" for m in waiting)
                raise StackError(f"not ready within {self.ready_timeout:.0f}s: {names}{tails}")
            if waiting:
                time.sleep(0.1)

    def _watch(self) -> None:
        """Restart crashed processes with backoff; enter them into discovery once ready again."""
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            with self._lock:
                for managed in self.processes:
                    if self._stopping.is_set():
                        return
                    self._check(managed, now)

    def _check(self, managed: Managed, now: float) -> None:
        proc = managed.proc
        if managed.restart_at is not None:
            if now >= managed.restart_at:
                managed.restarts += 1
                log.info("restarting %s (restart %d)", managed.spec.instance, managed.restarts)
                self._spawn(managed)
            return
        code = proc.poll() if proc else None
        if code is not None:
            if managed.ready and now - managed.ready_since >= STABLE_AFTER:
                managed.failures = 0
            managed.failures += 1
            delay = backoff(managed.failures)
            managed.history.append(f"exit {code}, restart in {delay:.1f}s")
            log.warning(
                "%s (pid %d) exited with code %s; restarting in %.1fs (log: %s)",
                managed.spec.instance, proc.pid, code, delay, managed.log_path,
            )  # fmt: skip
            if managed.ready and managed.spec.discoverable and self.discovery is not None:
                self.discovery.deregister(managed.endpoint)
            managed.ready = False
            managed.restart_at = now + delay
            return
        if not managed.ready and self._probe(managed):
            self._mark_ready(managed)
            log.info("%s is ready (pid %d, port %d)", managed.spec.instance, proc.pid, managed.spec.port)

    def stop(self) -> None:
        """Out of discovery, SIGTERM (gateway first), wait `grace`, SIGKILL the rest."""
        self._stopping.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(5)
        with self._lock:
            for managed in self.processes:
                if managed.ready and managed.spec.discoverable and self.discovery is not None:
                    with contextlib.suppress(Exception):
                        self.discovery.deregister(managed.endpoint)
                managed.ready = False
            front = [m for m in self.processes if m.spec.service == "gateway"]
            rest = [m for m in self.processes if m.spec.service != "gateway"]
            for group in (front, rest):
                self._terminate(group)
        if self.discovery is not None:
            self.discovery.close()
        self._http.close()
        log.info("stack stopped")
        if getattr(self, "_log_handler", None) is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _terminate(self, group: list[Managed]) -> None:
        running = [m.proc for m in group if m.proc is not None and m.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in running:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop within %.0fs: SIGKILL", proc.pid, self.grace)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)

    # ------------------------------------------------------------------ views

    def _write_stack_file(self) -> None:
        table = {
            "spec": str(self.spec_path),
            "supervisor_pid": os.getpid(),
            "processes": [
                {
                    "service": m.spec.service,
                    "instance": m.spec.instance,
                    "pid": m.proc.pid if m.proc else None,
                    "port": m.spec.port,
                    "health": m.spec.health_url,
                    "log": str(m.log_path),
                    **{k: m.spec.meta[k] for k in ("model", "version") if k in m.spec.meta},
                }
                for m in self.processes
            ],
        }
        tmp = self.run_dir / f".{STACK_FILE}.tmp"
        tmp.write_bytes(orjson.dumps(table, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.run_dir / STACK_FILE)

    def instances(self, service: str) -> list[Managed]:
        return [m for m in self.processes if m.spec.service == service]

    def url(self, service: str) -> str:
        return self.instances(service)[0].spec.url


def run_until_signalled(stack: LocalStack, banner: str = "") -> int:
    """`meshserve up`'s main loop: SIGINT/SIGTERM -> drain and stop. The banner is printed once the
    handlers are in place, so a signal sent by whoever read it always drains."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if banner:
        print(banner, flush=True)
    while not done.wait(0.5):
        pass
    print("meshserve up: stopping (draining every process)...", file=sys.stderr, flush=True)
    stack.stop()
    return 0
