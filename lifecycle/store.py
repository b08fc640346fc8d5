"""Where model versions live: a local repository folder or an S3 prefix, behind one small interface.

Both hold the model repository layout the servers read (`<model>/config.yaml`,
`<model>/<N>/model.onnx` + `metadata.yaml`); on S3 that is the layout the cluster's model-sync init
container copies with `aws s3 sync <uri>/<model>/ ...` (mesh/compile/k8s.py).

Writing a version is atomic for readers:
- locally, every file goes into a hidden temporary folder beside the target (`<model>/.publish-<pid>-<id>`,
  never a number, so a polling model server never takes it for a version) and the folder is renamed
  into place in one step; rename refuses a target that already holds files, so two publishers cannot
  both write version N. A publisher killed before the rename leaves only that hidden folder, which the
  next publish of the model removes once its process is gone.
- on S3, objects appear one by one, so the version's marker, `model.onnx` (what servers look for), is
  written last; every object is written with `If-None-Match: *`, so an existing version is never
  overwritten and two racing writers never mix their files. A folder abandoned half-way (no
  `model.onnx`) is no version to a server and its number is skipped, never reused.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.yaml"
STAGING_PREFIX = ".publish-"
PAUSE_ENV = "MESHSERVE_TEST_PUBLISH_PAUSE"  # tests only: "<checkpoint>:<marker file>", see _checkpoint


class VersionExists(FileExistsError):
    """Another version N was written first (an OSError: the CLI reports it like any storage failure)."""


def is_version(name: str) -> bool:
    return name.isascii() and name.isdigit() and int(name) > 0


def _checkpoint(name: str) -> None:
    """Test hook: with MESHSERVE_TEST_PUBLISH_PAUSE=<name>:<file>, write <file> and wait to be killed.

    The atomicity tests use it to kill a publisher at a known point of its write.
    """
    wanted = os.environ.get(PAUSE_ENV, "")
    point, _, marker = wanted.partition(":")
    if point == name and marker:
        import time

        Path(marker).write_text(str(os.getpid()))
        while True:
            time.sleep(1)


class Store(Protocol):
    uri: str

    def read(self, path: str) -> bytes:
        """A file relative to the repository root ("digits/config.yaml"); FileNotFoundError if absent."""
        ...

    def versions(self, model: str) -> list[int]:
        """Versions that hold a model file, ascending."""
        ...

    def next_version(self, model: str) -> int:
        """One above every numbered folder, finished or not (an abandoned S3 upload is skipped, not reused)."""
        ...

    def write_version(self, model: str, version: int, files: Mapping[str, bytes]) -> str:
        """Write `<model>/<version>/` atomically (VersionExists if it is there); returns its location."""
        ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def versions(self, model: str) -> list[int]:
        try:
            entries = list((self.root / model).iterdir())
        except OSError:
            return []
        return sorted(int(e.name) for e in entries if is_version(e.name) and (e / MODEL_FILE).is_file())

    def next_version(self, model: str) -> int:
        try:
            names = [e.name for e in (self.root / model).iterdir()]
        except OSError:
            names = []
        return max([int(n) for n in names if is_version(n)], default=0) + 1

    def write_version(self, model: str, version: int, files: Mapping[str, bytes]) -> str:
        model_dir = self.root / model
        if not model_dir.is_dir():
            raise FileNotFoundError(f"no model folder {model_dir}")
        remove_stale_staging(model_dir)
        target = model_dir / str(version)
        if target.exists() and any(target.iterdir()):
            raise VersionExists(f"{target} already exists")
        staging = model_dir / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            # The model file last: it is what marks a version, here and on S3.
            ordered = sorted(files, key=lambda name: name == MODEL_FILE)
            for name in ordered:
                _write_synced(staging / name, files[name], name == MODEL_FILE)
            _fsync_dir(staging)
            _checkpoint("staged")
            try:
                os.rename(staging, target)  # atomic; fails if the target is a folder with files
            except OSError as exc:
                raise VersionExists(f"{target} was written by someone else meanwhile: {exc}") from None
            _fsync_dir(model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return str(target)


def _write_synced(path: Path, data: bytes, pause_halfway: bool) -> None:
    with path.open("wb") as handle:
        if pause_halfway:  # lets a test kill the writer with half a model on disk
            half = len(data) // 2
            handle.write(data[:half])
            handle.flush()
            _checkpoint("partial-model")
            handle.write(data[half:])
        else:
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(model_dir: Path) -> list[Path]:
    """Remove staging folders whose publisher is gone (killed mid-write); returns what was removed."""
    removed = []
    for entry in model_dir.glob(f"{STAGING_PREFIX}*"):
        pid = entry.name.removeprefix(STAGING_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class S3Store:
    """`s3://bucket/prefix`, through boto3 (endpoint and credentials the usual way: AWS_ENDPOINT_URL, ...)."""

    def __init__(self, uri: str, client_factory: Callable[[], object] | None = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: write an S3 location as s3://bucket[/prefix]")
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        if client_factory is None:
            try:
                import boto3
            except ModuleNotFoundError:
                raise ValueError("publishing to s3:// needs boto3: pip install 'meshserve[lifecycle]'") from None
            client_factory = lambda: boto3.client("s3")  # noqa: E731
        self.client = client_factory()

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _call(self, what: str, operation: Callable[[], Any]) -> Any:
        """Run one S3 call; unreachable endpoints, missing buckets, denied access -> OSError naming the URI."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return operation()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{self.uri}/{what}") from None
            if code == "PreconditionFailed":
                raise VersionExists(f"{self.uri}/{what} was written by someone else meanwhile") from None
            raise OSError(
                f"S3 {self.uri}/{what}: {code}: {exc.response.get('Error', {}).get('Message', exc)}"
            ) from None
        except BotoCoreError as exc:
            raise OSError(f"S3 {self.uri}/{what}: {exc}") from None

    def read(self, path: str) -> bytes:
        return self._call(path, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read())

    def _list(self, prefix: str, delimiter: str = "") -> tuple[list[str], list[str]]:
        keys, prefixes = [], []
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {"Delimiter": delimiter} if delimiter else {}
        pages = self._call(
            prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix), **extra))
        )
        for page in pages:
            keys += [obj["Key"] for obj in page.get("Contents", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return keys, prefixes

    def versions(self, model: str) -> list[int]:
        keys, _ = self._list(f"{model}/")
        base = self._key(f"{model}/")
        found = set()
        for key in keys:
            parts = key.removeprefix(base).split("/")
            if len(parts) == 2 and parts[1] == MODEL_FILE and is_version(parts[0]):
                found.add(int(parts[0]))
        return sorted(found)

    def next_version(self, model: str) -> int:
        keys, _ = self._list(f"{model}/")
        base = self._key(f"{model}/")
        folders = [key.removeprefix(base).split("/")[0] for key in keys if "/" in key.removeprefix(base)]
        return max([int(f) for f in folders if is_version(f)], default=0) + 1

    def write_version(self, model: str, version: int, files: Mapping[str, bytes]) -> str:
        folder = f"{model}/{version}/"
        existing, _ = self._list(folder)
        if existing:
            raise VersionExists(f"{self.uri}/{folder} already holds {len(existing)} object(s)")
        for name in sorted(files, key=lambda n: n == MODEL_FILE):
            # If-None-Match on every object: the first to create one owns the version, so a writer that
            # raced past the listing above stops at its first object and never mixes its files with ours.
            put = {"Bucket": self.bucket, "Key": self._key(folder + name), "Body": files[name], "IfNoneMatch": "*"}
            self._call(folder + name, lambda put=put: self.client.put_object(**put))
        return f"{self.uri}/{folder}"


def open_store(location: str | Path) -> Store:
    text = str(location)
    if text.startswith("s3://"):
        return S3Store(text)
    root = Path(text)
    if not root.is_dir():
        raise ValueError(f"model repository {root} is not a folder")
    return LocalStore(root)
