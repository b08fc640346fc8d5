"""The Dockerfiles cannot be built here (no Docker engine): check what can be checked statically and
could drift: multi-stage, non-root with the uid the pods run as, the right onnxruntime extra, the
entry point the Deployments call, and every COPY source present and let through the ignore file."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from mesh.compile.k8s import RUN_AS
from tests.infra.harness import ROOT

IMAGES = {"Dockerfile": "cpu", "Dockerfile.gpu": "gpu"}


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("name", list(IMAGES))
def test_multi_stage_non_root_with_the_pods_uid(name: str) -> None:
    steps = instructions(ROOT / "services" / name)
    stages = [arg for op, arg in steps if op == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith(" AS build")
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    (user,) = [arg for op, arg in final if op == "USER"]
    assert user == f"{RUN_AS}:{RUN_AS}"
    assert any(op == "COPY" and arg.startswith("--from=build ") for op, arg in final)
    assert ("ENTRYPOINT", '["meshserve"]') in final  # Deployments call `meshserve serve` / `python -m ...`


@pytest.mark.parametrize(("name", "extra"), list(IMAGES.items()))
def test_installs_exactly_one_onnxruntime_extra(name: str, extra: str) -> None:
    runs = " ".join(arg for op, arg in instructions(ROOT / "services" / name) if op == "RUN")
    assert f'pip install ".[{extra}]"' in runs
    other = {"cpu": "gpu", "gpu": "cpu"}[extra]
    assert f".[{other}]" not in runs


@pytest.mark.parametrize("name", list(IMAGES))
def test_copy_sources_exist_and_pass_the_ignore_file(name: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / "services" / f"{name}.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.lstrip("!")
            if fnmatch.fnmatch(path, bare) or fnmatch.fnmatch(path, bare.removesuffix("/**") + "*"):
                keep = negate
        return keep

    for op, arg in instructions(ROOT / "services" / name):
        if op == "COPY" and not arg.startswith("--from"):
            *sources, _dest = arg.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert included(source), f"{source} is excluded by {name}.dockerignore"
    assert not included(".venv/bin/python")
    assert not included("models/digits/1/model.onnx")  # artifacts arrive through the init container


def _args(path: Path) -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in instructions(path) if op == "ARG" and "=" in arg)


def test_the_gpu_images_cuda_major_and_its_onnxruntime_gpu_pin_agree() -> None:
    """onnxruntime-gpu's wheels are built for one CUDA major (runtime.ORT_GPU_CUDA_MAJOR, from their
    metadata); on a base of another major the CUDA provider cannot load and everything runs on the CPU."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    from services.modelserver.runtime import cuda_major_for

    args = _args(ROOT / "services" / "Dockerfile.gpu")
    image_cuda = int(re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-\S+", args["CUDA_IMAGE"]).group(1))
    pinned = args["ONNXRUNTIME_GPU"]
    assert cuda_major_for(pinned) == image_cuda, (pinned, args["CUDA_IMAGE"])
    runs = " ".join(arg for op, arg in instructions(ROOT / "services" / "Dockerfile.gpu") if op == "RUN")
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU}"' in runs
    # `pip install .[gpu]` elsewhere must not resolve to a build for another CUDA major either.
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    (requirement,) = extra
    allowed = SpecifierSet(requirement.removeprefix("onnxruntime-gpu"))
    assert pinned in allowed
    candidates = [f"1.{minor}.0" for minor in range(15, 60)]
    assert {cuda_major_for(v) for v in candidates if v in allowed} == {image_cuda}
