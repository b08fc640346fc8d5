"""The model repository: what is on disk, what is serving, and the moves between them.

A (re)load builds the new version completely (sessions, signature, batcher) before it replaces the
old one, so a broken file never takes a serving version down; the failure is reported in the index
(state + reason), in the logs and in meshserve_model_load_failures_total. Loads run in a thread:
the event loop keeps serving while onnxruntime builds sessions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from services.common.errors import ProtocolError, quoted
from services.common.files import FileIdentity, file_identity
from services.modelserver import warmup
from services.modelserver.batching import Batcher
from services.modelserver.config import CONFIG_FILE, MODEL_FILE, ModelConfig, load_config
from services.modelserver.health import FailureWindow
from services.modelserver.metrics import LOAD_FAILURES, VersionMetrics, clear_providers, set_providers, set_state
from services.modelserver.runtime import Runtime
from services.modelserver.signature import Signature

log = logging.getLogger(__name__)
METADATA_FILE = "metadata.yaml"  # a version's lineage and evaluation (lifecycle/publish.py writes it)


MAX_VERSION_DIGITS = 18  # versions are int64 in Triton; int() of 4,300+ digits raises (CPython's limit)


def is_version(text: str) -> bool:
    """ASCII digits only (str.isdigit() also takes "²" and other digits int() refuses), and few enough
    of them to be an int64 that int() converts in constant time."""
    return len(text) <= MAX_VERSION_DIGITS and text.isascii() and text.isdigit()


def check_model_name(name: str) -> None:
    """A model is a plain child folder of the repository: no ".", "..", separators or hidden names."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise ProtocolError(
            400, f"invalid model name {name!r}: it must name a folder directly in the repository (no leading '.')"
        )


def disk_versions(model_dir: Path) -> dict[int, FileIdentity]:
    """Version folders (positive integers) that hold a model file, with that file's stat."""
    found: dict[int, FileIdentity] = {}
    try:
        entries = list(model_dir.iterdir())
    except OSError:
        return found
    for entry in entries:
        if is_version(entry.name) and int(entry.name) > 0:
            stat = file_identity(entry / MODEL_FILE)
            if stat is not None:
                found[int(entry.name)] = stat
    return found


def version_parameters(version_dir: Path) -> dict[str, str]:
    """Lineage and evaluation from the version's metadata.yaml (written by `meshserve model publish`),
    as the repository index's extra `parameters`; {} without one. Read once per load, never per request."""
    try:
        meta = yaml.safe_load((version_dir / METADATA_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(meta, dict):
        return {}
    evaluation = meta.get("evaluation") if isinstance(meta.get("evaluation"), dict) else {}
    produced = meta.get("produced_by") if isinstance(meta.get("produced_by"), dict) else {}
    found = {
        "sha256": meta.get("sha256"),
        "parent": meta.get("parent"),
        "produced_by": produced.get("how") or meta.get("built_by"),
        "metric": evaluation.get("metric"),
        "metric_value": evaluation.get("value", (meta.get("held_out") or {}).get("accuracy")),
        "agreement_with_stable": evaluation.get("agreement_with_stable"),
        "gates_passed": evaluation.get("passed"),
    }
    return {key: str(value) for key, value in found.items() if value is not None}


def _build(path: Path, config: ModelConfig, label: str, require_device: str | None) -> Runtime:
    """Load thread: sessions, then the warm-up; a version that fails it never serves."""
    runtime = Runtime(path.read_bytes(), config, label, require_device)
    try:
        warmup.run(runtime, config)
    except Exception:
        runtime.close()
        raise
    return runtime


@dataclass(eq=False)
class ServingVersion:
    """One loaded model version: what the infer path needs, nothing else."""

    model: str
    version: int
    config: ModelConfig
    runtime: Runtime
    batcher: Batcher
    metrics: VersionMetrics
    stamp: tuple  # (config stat, model file stat) it was built from
    health: FailureWindow = field(default_factory=FailureWindow)

    def __post_init__(self) -> None:
        self.name_version = str(self.version)
        self.header_version = self.name_version.encode()

    @property
    def signature(self) -> Signature:
        return self.runtime.signature


@dataclass
class VersionStatus:
    state: str
    reason: str = ""


@dataclass
class ModelRecord:
    name: str
    config: ModelConfig | None = None
    required: bool = True
    serving: dict[int, ServingVersion] = field(default_factory=dict)
    status: dict[int, VersionStatus] = field(default_factory=dict)
    reason: str = ""  # model-level failure (config) when no version can be reported
    fingerprint: object = None
    unloaded: bool = False  # unloaded through the API: polling leaves it alone until a load
    parameters: dict[int, dict[str, str]] = field(default_factory=dict)  # from metadata.yaml, read at load

    def newest(self) -> ServingVersion | None:
        """The newest healthy version (the newest one when none is healthy)."""
        if not self.serving:
            return None
        newest = self.serving[max(self.serving)]
        if newest.health.healthy:
            return newest
        healthy = [v for v, s in self.serving.items() if s.health.healthy]
        return self.serving[max(healthy)] if healthy else newest

    def healthy(self) -> bool:
        return any(s.health.healthy for s in self.serving.values())


class Repository:
    def __init__(
        self,
        root: Path,
        only: dict[str, int | None] | None = None,
        overrides: dict[str, dict] | None = None,
        require_device: str | None = None,
    ) -> None:
        self.root = root
        self.require_device = require_device  # --require-device: a version on another device fails to load
        self.only = only or None  # --model filter: name -> pinned version (or None: config's policy)
        self.overrides = overrides or {}  # --config-override: name -> partial config.yaml
        self.models: dict[str, ModelRecord] = {}
        self._lock = asyncio.Lock()
        self._retired: set[asyncio.Task] = set()
        self.scanned = False  # the first scan has finished: until then the server is not ready

    # ------------------------------------------------------------ queries (hot path: get)

    def get(self, model: str, version: str | None) -> ServingVersion:
        record = self.models.get(model)
        if record is None:
            raise ProtocolError(404, f"unknown model {quoted(model)}")
        if version is None:
            newest = record.newest()
            if newest is None:
                raise ProtocolError(404, f"model {model!r} has no ready version{self._why(record)}")
            return newest
        if not is_version(version):
            raise ProtocolError(
                404,
                f"unknown version {quoted(version)} of model {model!r}: versions are whole numbers of at most "
                f"{MAX_VERSION_DIGITS} digits",
            )
        serving = record.serving.get(int(version))
        if serving is None:
            status = record.status.get(int(version))
            detail = f" ({status.state}{': ' + status.reason if status.reason else ''})" if status else ""
            raise ProtocolError(404, f"model {model!r} has no ready version {version!r}{detail}")
        return serving

    @staticmethod
    def _why(record: ModelRecord) -> str:
        if record.reason:
            return f": {record.reason}"
        reasons = [f"version {v}: {s.reason}" for v, s in sorted(record.status.items()) if s.reason]
        return f": {'; '.join(reasons)}" if reasons else ""

    def ready(self) -> bool:
        """The first scan is done and every required model has a serving version."""
        if not self.scanned or (self.only and any(name not in self.models for name in self.only)):
            return False
        # A server that must run on a device (a GPU pod) is ready only when every model it loads runs there.
        return all(r.healthy() or not (r.required or self.require_device) for r in self.models.values())

    def index(self, ready_only: bool = False) -> list[dict]:
        rows: list[dict] = []
        for name in sorted(self.models):
            record = self.models[name]
            if not record.status and record.reason and not ready_only:
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": record.reason})
            for version in sorted(record.status):
                status = record.status[version]
                state, reason = status.state, status.reason
                serving = record.serving.get(version)
                if serving is not None and not serving.health.healthy:
                    state = "UNAVAILABLE"
                    reason = f"failing: {serving.health.describe()} (still loaded for requests naming this version)"
                if ready_only and state != "READY":
                    continue
                row = {"name": name, "version": str(version), "state": state, "reason": reason}
                if record.parameters.get(version):
                    row["parameters"] = record.parameters[version]
                rows.append(row)
        return rows

    # ------------------------------------------------------------ changes

    def _model_names_on_disk(self) -> list[str]:
        if self.only:
            return sorted(self.only)
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return []

    def _fingerprint(self, name: str) -> object:
        model_dir = self.root / name
        return (file_identity(model_dir / CONFIG_FILE), tuple(sorted(disk_versions(model_dir).items())))

    async def poll(self) -> None:
        """Reload models whose config or model files changed; load new ones, unload vanished ones."""
        names = self._model_names_on_disk()
        for name in names:
            record = self.models.get(name)
            if record is not None and record.unloaded:
                continue
            if record is None or record.fingerprint != self._fingerprint(name):
                try:
                    await self.load(name, explicit=False)
                except Exception:  # one model's surprise must not stop the others from loading
                    log.exception("loading model %s failed", name, extra={"model": name})
        for name in [n for n in self.models if n not in names]:
            async with self._lock:
                await self._unload(self.models.pop(name), "removed from the repository")
        await self._probe_failing()
        self.scanned = True

    async def _probe_failing(self) -> None:
        """A failing version gets little traffic to recover with: its warm-up (or one run of zeros) is
        run again on each poll, and passing it makes the version healthy again."""
        for record in list(self.models.values()):
            for serving in list(record.serving.values()):
                if serving.health.healthy:
                    continue
                entries = serving.config.model_warmup or [warmup.PROBE]
                try:
                    await asyncio.to_thread(warmup.run, serving.runtime, serving.config, entries)
                except Exception as exc:  # still failing: stays out of unversioned traffic
                    log.warning("model %s version %d still failing: %s", record.name, serving.version, exc)
                    continue
                serving.health.reset()
                serving.metrics.healthy.set(1)
                log.info("model %s version %d passed its probe: healthy again", record.name, serving.version)

    async def poll_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll()
            except Exception:  # a poll must never kill the poller
                log.exception("repository poll failed")

    async def load(self, name: str, explicit: bool = True) -> None:
        """(Re)load one model per its config and version policy; raises ProtocolError for the API."""
        check_model_name(name)
        async with self._lock:
            model_dir = self.root / name
            record = self.models.get(name)
            if self.only is not None and name not in self.only:
                raise ProtocolError(404, f"model {name!r} is not served by this process (--model)")
            if record is None:
                if not model_dir.is_dir():  # nothing to report: no record, so readiness is untouched
                    if explicit:
                        raise ProtocolError(404, f"no model {name!r} in the repository {self.root}")
                    return
                record = self.models[name] = ModelRecord(name)
            if not model_dir.is_dir():
                await self._unload(record, "removed from the repository")
                record.reason = f"no folder {name!r} in the repository {self.root}"
                record.fingerprint = self._fingerprint(name)
                if explicit:
                    raise ProtocolError(404, f"no model {name!r} in the repository {self.root}")
                return
            record.unloaded = False
            record.fingerprint = self._fingerprint(name)
            ok = await self._reload(record, model_dir)
            if explicit and not ok:
                kept = f" (still serving versions {sorted(record.serving)})" if record.serving else ""
                raise ProtocolError(400, f"failed to load model {name!r}{kept}{self._why(record)}")

    async def _reload(self, record: ModelRecord, model_dir: Path) -> bool:
        """Apply config and policy; False if anything wanted could not be loaded."""
        name = record.name
        try:
            config = load_config(model_dir, self.overrides.get(name))
        except ValueError as exc:
            record.reason = str(exc)
            for version, status in record.status.items():
                if version in record.serving:
                    status.reason = f"new config rejected, still serving the previous one: {exc}"
            LOAD_FAILURES.labels(name, "").inc()
            log.error("model %s: config rejected: %s", name, exc, extra={"model": name})
            return False
        record.reason = ""
        record.config = config
        record.required = config.required
        on_disk = disk_versions(model_dir)
        pinned = self.only.get(name) if self.only else None
        wanted = [pinned] if pinned is not None else config.version_policy.select(list(on_disk))
        config_stat = file_identity(model_dir / CONFIG_FILE)
        all_ok = bool(wanted)
        if not wanted:
            record.reason = f"no version selected by the policy among {sorted(on_disk)}"
        for version in wanted:
            if version not in on_disk:
                all_ok = False
                self._fail(record, version, f"{model_dir / str(version) / MODEL_FILE} does not exist")
                continue
            stamp = (config_stat, on_disk[version])
            current = record.serving.get(version)
            if current is not None and current.stamp == stamp:
                continue
            if not await self._load_version(record, config, model_dir, version, stamp):
                all_ok = False
        # Versions the policy no longer wants go only once everything it wants is serving, so a
        # broken new version never leaves the model with nothing to serve.
        for version in [v for v in record.serving if v not in wanted]:
            if all_ok:
                self._retire(record, version, "no longer selected by the version policy")
            else:
                record.status[version].reason = "kept serving: not every version the policy selects now loaded"
        for version in [v for v in record.status if v not in wanted and v not in record.serving]:
            if record.status[version].state != "UNLOADED":
                record.status[version] = VersionStatus("UNLOADED", "no longer selected or present")
                set_state(name, str(version), "UNLOADED")
        return all_ok

    async def _load_version(
        self, record: ModelRecord, config: ModelConfig, model_dir: Path, version: int, stamp: tuple
    ) -> bool:
        name, label = record.name, f"{record.name}:{version}"
        current = record.serving.get(version)
        if current is None:
            record.status[version] = VersionStatus("LOADING")
            set_state(name, str(version), "LOADING")
        path = model_dir / str(version) / MODEL_FILE
        try:
            runtime = await asyncio.to_thread(_build, path, config, label, self.require_device)
        except Exception as exc:
            reason = f"failed to load {path}: {type(exc).__name__}: {exc}"
            if current is not None:
                reason += " (still serving the previously loaded file)"
            self._fail(record, version, reason)
            return False
        record.parameters[version] = await asyncio.to_thread(version_parameters, model_dir / str(version))
        metrics = VersionMetrics(name, str(version))
        health = FailureWindow()
        batcher = Batcher(runtime, config, metrics, label, health)
        record.serving[version] = ServingVersion(name, version, config, runtime, batcher, metrics, stamp, health)
        record.status[version] = VersionStatus("READY")
        set_state(name, str(version), "READY")
        set_providers(name, str(version), runtime.providers)
        log.info(
            "model %s version %d %s on %s",
            name,
            version,
            "reloaded" if current else "loaded",
            ",".join(runtime.providers),
            extra={"model": name, "model_version": version, "providers": runtime.providers},
        )
        if current is not None:
            self._retire_task(current)
        return True

    def _fail(self, record: ModelRecord, version: int, reason: str) -> None:
        serving = version in record.serving
        record.status[version] = VersionStatus("READY" if serving else "UNAVAILABLE", reason)
        set_state(record.name, str(version), "READY" if serving else "UNAVAILABLE")
        LOAD_FAILURES.labels(record.name, str(version)).inc()
        log.error("model %s version %d: %s", record.name, version, reason, extra={"model": record.name})

    def _retire(self, record: ModelRecord, version: int, reason: str) -> None:
        old = record.serving.pop(version)
        record.status[version] = VersionStatus("UNLOADED", reason)
        set_state(record.name, str(version), "UNLOADED")
        clear_providers(record.name, str(version))
        log.info("model %s version %d unloaded: %s", record.name, version, reason, extra={"model": record.name})
        self._retire_task(old)

    def _retire_task(self, old: ServingVersion) -> None:
        """Drain a replaced/removed version in the background: its queued requests still finish."""
        task = asyncio.get_running_loop().create_task(old.batcher.drain())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def unload(self, name: str) -> None:
        async with self._lock:
            record = self.models.get(name)
            if record is None:
                raise ProtocolError(404, f"unknown model {name!r}")
            await self._unload(record, "unloaded through the repository API")
            record.unloaded = True

    async def _unload(self, record: ModelRecord, reason: str) -> None:
        for version in list(record.serving):
            self._retire(record, version, reason)
        await self._wait_retired()

    async def _wait_retired(self) -> None:
        if self._retired:
            await asyncio.gather(*list(self._retired), return_exceptions=True)

    # ------------------------------------------------------------ lifecycle

    def start_flush(self) -> None:
        for record in self.models.values():
            for serving in record.serving.values():
                serving.batcher.start_flush()

    async def close(self) -> None:
        async with self._lock:
            for record in self.models.values():
                for version in list(record.serving):
                    self._retire(record, version, "server shutting down")
            await self._wait_retired()
