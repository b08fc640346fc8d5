"""The v2 gRPC stubs, generated from inference.proto by grpcio-tools at first import.

Nothing generated is committed: the stubs are built for the protobuf runtime actually installed
(its generated code checks the runtime's version), into a cache folder keyed by the .proto text and
the tool versions, so `pip install -e .`, a wheel and a fresh CI machine all work the same way.
`MESHSERVE_CACHE_DIR` moves the cache (default: $XDG_CACHE_HOME/meshserve, else ~/.cache/meshserve).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).with_name("inference.proto")


def cache_root() -> Path:
    explicit = os.environ.get("MESHSERVE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshserve"


def _key() -> str:
    import google.protobuf
    import grpc_tools

    tools = getattr(grpc_tools, "__version__", None) or _dist_version("grpcio-tools")
    text = PROTO.read_bytes() + f"|{tools}|{google.protobuf.__version__}".encode()
    return hashlib.sha256(text).hexdigest()[:16]


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def generate(target: Path) -> Path:
    """Run protoc (grpcio-tools, in process) into `target`; written to a temporary folder first and
    renamed, so concurrent first imports (several server processes) never see half a file."""
    from grpc_tools import protoc

    if (target / "inference_pb2_grpc.py").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        include = str(Path(protoc.__file__).parent / "_proto")
        status = protoc.main(
            ["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={staging}", f"--grpc_python_out={staging}",
             str(PROTO)]
        )  # fmt: skip
        if status != 0:
            raise RuntimeError(f"protoc failed ({status}) on {PROTO}")
        with contextlib.suppress(OSError):  # another process won the race: use its copy
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load() -> tuple[ModuleType, ModuleType]:
    """(inference_pb2, inference_pb2_grpc), generated on first use and imported once per process."""
    if "inference_pb2_grpc" in sys.modules:
        return sys.modules["inference_pb2"], sys.modules["inference_pb2_grpc"]
    folder = cache_root() / "proto" / _key()
    try:
        generate(folder)
    except OSError:  # an unwritable cache: a private temporary one
        folder = generate(Path(tempfile.mkdtemp(prefix="meshserve-proto-")) / "stubs")
    pb2 = _load("inference_pb2", folder / "inference_pb2.py")  # the name the _grpc module imports
    return pb2, _load("inference_pb2_grpc", folder / "inference_pb2_grpc.py")
