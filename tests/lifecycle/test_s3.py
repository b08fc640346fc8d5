"""Publishing to an S3 prefix through the same code as a folder, against moto's S3 server running on
loopback (real HTTP, the real boto3 client): the next version lands in the layout the cluster's
model-sync init container copies (`aws s3 sync <uri>/<model>/` with mesh/compile/k8s.py's filters),
a refused candidate writes no object, and `list` reads the registry from the bucket."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.compile.k8s import sync_filters
from services.cli import main
from services.modelserver.repository import disk_versions
from tests.lifecycle.helpers import BAD, RETRAINED, make_repository, make_spec
from tests.services.modelserver.serverproc import free_port

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET, PREFIX = "models", "meshserve/prod"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


def keys(client, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}")
    return sorted(o["Key"].removeprefix(f"{PREFIX}/") for page in pages for o in page.get("Contents", []))


def upload(client, repo: Path) -> None:
    for path in sorted(repo.rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket=BUCKET, Key=f"{PREFIX}/{path.relative_to(repo).as_posix()}", Body=path.read_bytes()
            )


def aws_s3_sync(client, model: str, version: int, target: Path) -> None:
    """What the model pod's init container copies: `aws s3 sync <uri>/<model>/ <dir>/<model>/` + filters
    (--exclude '*' --include config.yaml --include labels.txt --include '<N>/*'; the last rule wins)."""
    filters = sync_filters(type("W", (), {"component": "model", "version": version})())
    rules = list(zip(filters[::2], filters[1::2], strict=True))
    for key in keys(client, f"{model}/"):
        relative = key.removeprefix(f"{model}/")
        included = True
        for flag, pattern in rules:
            if fnmatch.fnmatchcase(relative, pattern):
                included = flag == "--include"
        if included:
            out = target / model / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read())


@pytest.mark.timeout(120)
def test_publish_to_s3_writes_the_layout_the_cluster_syncs(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = make_repository(tmp_path)
    spec = make_spec(tmp_path, local)
    upload(s3, local)
    uri = f"s3://{BUCKET}/{PREFIX}"

    assert main(["model", "publish", "--spec", str(spec), "--repository", uri, "digits", str(BAD)]) == 1
    assert "refused" in capsys.readouterr().err
    assert keys(s3, "digits/3/") == [], "a refused candidate writes no object"

    argv = ["model", "publish", "--spec", str(spec), "--repository", uri, "digits", str(RETRAINED), "--json"]
    assert main(argv) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["version"] == 3 and meta["evaluation"]["passed"] is True
    assert keys(s3, "digits/3/") == ["digits/3/metadata.yaml", "digits/3/model.onnx"]
    body = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/digits/3/model.onnx")["Body"].read()
    assert body == RETRAINED.read_bytes()

    # What a v3 pod's init container would copy is a repository the model server reads.
    pod = tmp_path / "pod-models"
    aws_s3_sync(s3, "digits", 3, pod)
    assert sorted(p.relative_to(pod).as_posix() for p in pod.rglob("*") if p.is_file()) == [
        "digits/3/metadata.yaml", "digits/3/model.onnx", "digits/config.yaml", "digits/labels.txt",
    ]  # fmt: skip
    assert list(disk_versions(pod / "digits")) == [3]

    assert main(["model", "list", "digits", "--spec", str(spec), "--repository", uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]["digits"]
    assert [(r["version"], r["state"]) for r in rows] == [(1, "stable"), (2, "canary"), (3, "published")]


def test_s3_errors_are_named_and_a_written_version_is_never_overwritten(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lifecycle.store import S3Store, VersionExists

    spec = make_spec(tmp_path, make_repository(tmp_path))
    argv = ["model", "publish", "--spec", str(spec), "--repository", "s3://no-such-bucket/x", "digits", str(RETRAINED)]
    assert main(argv) == 2
    assert "S3 s3://no-such-bucket/x/digits/config.yaml: NoSuchBucket" in capsys.readouterr().err

    store = S3Store(f"s3://{BUCKET}/{PREFIX}")
    store.write_version("digits", 9, {"model.onnx": b"first", "metadata.yaml": b"a: 1\n"})
    with pytest.raises(VersionExists):
        store.write_version("digits", 9, {"model.onnx": b"second", "metadata.yaml": b"a: 2\n"})
    # A writer that passed the listing check at the same moment is stopped by If-None-Match at its first object.
    racing = S3Store(f"s3://{BUCKET}/{PREFIX}")
    racing._list = lambda prefix, delimiter="": ([], [])  # it saw an empty folder
    with pytest.raises(VersionExists):
        racing.write_version("digits", 9, {"model.onnx": b"second", "metadata.yaml": b"a: 2\n"})
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/digits/9/model.onnx")["Body"].read() == b"first"
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/digits/9/metadata.yaml")["Body"].read() == b"a: 1\n"

    # An upload abandoned before its model file is no version, and its number is not reused.
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/digits/10/metadata.yaml", Body=b"a: 3\n")
    assert store.versions("digits")[-1] == 9 and store.next_version("digits") == 11
