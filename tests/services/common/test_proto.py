"""Our inference.proto against the upstream protocol: every message and field we declare has the
same number, type and label as in the copy of Triton's grpc_service.proto / model_config.proto that
tritonclient ships (read as descriptors, never loaded beside ours), and the stubs build from a clean
cache in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from tritonclient.grpc import model_config_pb2, service_pb2

from services.common.proto import PROTO

ROOT = Path(__file__).resolve().parents[3]


def _ours(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / "ours.pb"
    assert protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (ours,) = files.file
    return ours


def _messages(prefix: str, messages: object) -> dict[str, descriptor_pb2.DescriptorProto]:
    found = {}
    for message in messages:
        name = f"{prefix}.{message.name}"
        found[name] = message
        found.update(_messages(name, message.nested_type))
    return found


def _upstream() -> tuple[dict, dict]:
    messages, enums = {}, {}
    for module in (service_pb2, model_config_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        messages.update(_messages(proto.package, proto.message_type))
        enums.update({f"{proto.package}.{e.name}": e for e in proto.enum_type})
        for name, message in _messages(proto.package, proto.message_type).items():
            enums.update({f"{name}.{e.name}": e for e in message.enum_type})
    return messages, enums


def test_every_declared_field_matches_upstream(tmp_path: Path) -> None:
    ours = _ours(tmp_path)
    assert ours.package == "inference"
    upstream, upstream_enums = _upstream()
    mine = _messages(ours.package, ours.message_type)
    assert len(mine) > 60
    for name, message in mine.items():
        assert name in upstream, f"{name} is not an upstream message"
        theirs = {f.name: f for f in upstream[name].field}
        for field in message.field:
            assert field.name in theirs, f"{name}.{field.name} is not upstream"
            other = theirs[field.name]
            assert (field.number, field.type, field.label, field.type_name) == (
                other.number,
                other.type,
                other.label,
                other.type_name,
            ), f"{name}.{field.name}"
        for enum in message.enum_type:
            values = {v.name: v.number for v in upstream_enums[f"{name}.{enum.name}"].value}
            assert {v.name: v.number for v in enum.value}.items() <= values.items()
    for enum in ours.enum_type:
        values = {v.name: v.number for v in upstream_enums[f"inference.{enum.name}"].value}
        assert {v.name: v.number for v in enum.value} == values
    (service,) = ours.service
    upstream_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.method:
        other = upstream_service.methods_by_name[method.name]
        assert method.input_type == "." + other.input_type.full_name
        assert method.output_type == "." + other.output_type.full_name
        assert method.client_streaming == other.client_streaming
        assert method.server_streaming == other.server_streaming


def test_stubs_generate_into_a_fresh_cache(tmp_path: Path) -> None:
    code = (
        "from services.common.proto import load, cache_root; pb2, grpc_ = load(); "
        "assert hasattr(grpc_, 'GRPCInferenceServiceServicer'); print(cache_root())"
    )
    env = {**os.environ, "MESHSERVE_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    generated = list((tmp_path / "cache" / "proto").glob("*/inference_pb2_grpc.py"))
    assert len(generated) == 1
    # a second process reuses the cache (no staging folders left behind)
    again = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in (tmp_path / "cache" / "proto").iterdir()] == [generated[0].parent.name]
