"""The business API in both traffic modes, as real processes: two model servers (digits v1, v2), the two
stage services, a stand-in for Istio's routing in front of the model servers (mesh_standin.py, which
records every request and never retries), and one business API per mode.

Mesh mode runs as on Kubernetes: the pods' spec copy (no `traffic` block) and the discovery table the
k8s compiler writes (mesh/compile/k8s.py), hosts pointed at loopback; the stand-in answers as the
plain `digits` Service. Client mode runs as locally: the full spec, the stand-in as `digits-v1` and
`digits-v2`.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from mesh.compile import k8s
from mesh.compile.settings import Environment
from mesh.spec import DEFAULT_SPEC_PATH, load_spec, validate_spec
from services.common.routing import build_model_route
from services.common.traffic import CLIENT, MESH, TRAFFIC_ENV
from services.discovery import DISCOVERY_ENV
from tests.services.gateway.stack import Proc, _spawn, _wait_ready, start_model_server, wait_model_server
from tests.services.modelserver.serverproc import free_port

MODELS = DEFAULT_SPEC_PATH.parent.parent / "models"
SPEC = load_spec()
ROUTE = SPEC.pipelines["digits-classify"].route
STAGES = ("digits-classify-preprocess", "digits-classify-postprocess")
STANDIN_DEFAULT = 1  # the stand-in's split sends everything to v1


def png_digit() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8)).astype(np.uint8), mode="L").save(out, "PNG")
    return out.getvalue()


class Running:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.api: dict[str, Proc] = {}
        self.standin: Proc | None = None

    def spawn(self, args: list[str], env: dict[str, str] | None = None) -> Proc:
        port = free_port()
        proc = _spawn([*args, "--port", str(port)], port, self.root / f"{args[-1]}-{port}.log", env)
        self.procs.append(proc)
        return proc

    def seen(self) -> list[dict]:
        assert self.standin is not None
        return httpx.get(f"{self.standin.base}/_standin/seen", timeout=5).json()

    def control(self, action: str) -> None:
        assert self.standin is not None
        httpx.post(f"{self.standin.base}/_standin/{action}", timeout=5).raise_for_status()

    def classify(self, mode: str, headers: dict[str, str] | None = None) -> httpx.Response:
        self.control("reset")
        headers = {"content-type": "image/png", **(headers or {})}
        return httpx.post(self.api[mode].base + ROUTE, content=png_digit(), headers=headers, timeout=10)


def write_table(path: Path, services: dict[str, int]) -> None:
    table = {s: [{"instance": f"{s}-0", "host": "127.0.0.1", "port": p, "meta": {}}] for s, p in services.items()}
    path.write_text(json.dumps({"services": table}))


def pod_discovery(services: dict[str, int]) -> dict[str, int]:
    """The k8s compiler's discovery table, each entry pointed at loopback: it must name these services."""
    compiled = k8s.discovery_document(SPEC, Environment())["services"]
    assert compiled["digits"] == [
        {"instance": "digits", "host": "digits.meshserve.svc.cluster.local", "port": 8000, "meta": {}}
    ]
    return {name: services[name] for name in compiled if name in services}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("traffic")
    stack = Running(root)
    pod_doc = k8s.pod_spec_document(SPEC)
    pod_doc["repository"] = str(MODELS)  # the pods' copy, artifacts where this checkout has them
    pod_spec = root / "pod-mesh.yaml"
    pod_spec.write_text(yaml.safe_dump(pod_doc, sort_keys=False))
    python = [sys.executable, "-m"]
    try:
        models = {v: start_model_server(MODELS, "digits", v, root) for v in (1, 2)}
        stack.procs += models.values()
        stages = {
            s: stack.spawn([*python, "services.pipeline", "--spec", str(pod_spec), "--service", s]) for s in STAGES
        }
        upstreams = ",".join(f"{v}=127.0.0.1:{p.port}" for v, p in models.items())
        standin_port = free_port()
        stack.standin = _spawn(
            [*python, "uvicorn", "tests.services.pipeline.mesh_standin:app", "--port", str(standin_port)],
            standin_port,
            root / "standin.log",
            {"STANDIN_UPSTREAMS": upstreams, "STANDIN_DEFAULT": str(STANDIN_DEFAULT)},
        )
        stack.procs.append(stack.standin)
        ports = {s: p.port for s, p in stages.items()}
        write_table(root / "mesh.json", pod_discovery({**ports, "digits": standin_port}))
        write_table(root / "client.json", {**ports, "digits-v1": standin_port, "digits-v2": standin_port})
        for mode, spec_path in ((MESH, pod_spec), (CLIENT, DEFAULT_SPEC_PATH)):
            env = {TRAFFIC_ENV: mode, DISCOVERY_ENV: f"static:{root / f'{mode}.json'}"}
            args = [*python, "services.pipeline", "--spec", str(spec_path), "--service", "digits-classify"]
            stack.api[mode] = stack.spawn(args, env)
        for proc in models.values():
            wait_model_server(proc)
        _wait_ready(stack.standin, "/_standin/seen")
        for proc in [*stages.values(), *stack.api.values()]:
            _wait_ready(proc, "/ready")
        yield stack
    finally:
        for proc in reversed(stack.procs):
            with contextlib.suppress(Exception):
                proc.stop()


def infers(seen: list[dict]) -> list[dict]:
    return [r for r in seen if r["path"].endswith("/infer")]


# --------------------------------------------------------------------------- mesh mode


def test_mesh_mode_calls_the_plain_model_service_and_reports_the_answering_version(running: Running) -> None:
    # Deciding locally from the pods' spec (no traffic block) would pick v2, the highest version:
    pod_route = build_model_route("digits", validate_spec(k8s.pod_spec_document(SPEC)))
    assert pod_route.weighted(0.5) == 2 != STANDIN_DEFAULT
    reply = running.classify(MESH)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == str(STANDIN_DEFAULT)
    assert reply.headers["x-model-version"] == str(STANDIN_DEFAULT)
    (infer,) = infers(running.seen())
    assert infer == {
        "method": "POST",
        "path": "/v2/models/digits/infer",
        "x-model-version": None,
        "routed": STANDIN_DEFAULT,
        "answered": 200,
    }


@pytest.mark.parametrize("value", ["2", "v2", "V2"])
def test_mesh_mode_forwards_the_override_header_for_istio_to_match(running: Running, value: str) -> None:
    reply = running.classify(MESH, {"x-model-version": value})
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == "2"
    assert reply.headers["x-model-version"] == "2"
    seen = running.seen()
    assert all(r["path"].startswith("/v2/models/digits") and "/versions/" not in r["path"] for r in seen)
    assert all(r["x-model-version"] == "2" for r in seen)  # metadata too: the same subset answers both
    assert [r["routed"] for r in infers(seen)] == [2]


@pytest.mark.parametrize(("value", "status", "message"), [("v7", 404, "no version v7"), ("banana", 400, "banana")])
def test_mesh_mode_refuses_a_bad_override_as_locally(running: Running, value: str, status: int, message: str) -> None:
    for mode in (MESH, CLIENT):
        reply = running.classify(mode, {"x-model-version": value})
        assert reply.status_code == status, (mode, reply.text)
        assert message in reply.json()["error"]
        assert running.seen() == []  # refused before any model call


def test_one_retry_layer_istio_in_mesh_mode_the_client_locally(running: Running) -> None:
    running.control("reset")
    running.control("fail/1")
    reply = httpx.post(
        running.api[MESH].base + ROUTE, content=png_digit(), headers={"content-type": "image/png"}, timeout=10
    )
    assert reply.status_code == 503, reply.text  # the sidecar would have retried; the client did not
    assert reply.headers["retry-after"] == "1"
    assert [r["answered"] for r in infers(running.seen())] == [503]

    running.control("reset")
    running.control("fail/1")
    reply = httpx.post(
        running.api[CLIENT].base + ROUTE,
        content=png_digit(),
        headers={"content-type": "image/png", "x-model-version": "1"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text  # locally the client is the retry layer
    assert [(r["path"], r["answered"]) for r in infers(running.seen())] == [
        ("/v2/models/digits/versions/1/infer", 503),
        ("/v2/models/digits/versions/1/infer", 200),
    ]


def test_a_model_answer_that_does_not_read_is_the_models_failure(running: Running) -> None:
    """A 200 whose binary output runs short is read by the shared wire codec: 502 naming the model, so the
    gateway does not eject this healthy business API (before: an unhandled ValueError, a plain 500)."""
    running.control("reset")
    running.control("truncate/1")
    reply = httpx.post(
        running.api[MESH].base + ROUTE, content=png_digit(), headers={"content-type": "image/png"}, timeout=10
    )
    assert reply.status_code == 502, reply.text
    assert reply.headers["x-meshserve-dependency-failed"] == "digits"
    assert reply.json() == {
        "error": "digits answered a body that is not a v2 infer response: output 'logits': binary_data_size 40 "
        "runs past the end of the body (36 binary bytes left)",
        "stage": "digits",
    }
    assert running.classify(MESH).status_code == 200  # the next answer reads again


# --------------------------------------------------------------------------- client mode (local stack)


def test_client_mode_calls_the_version_service_with_the_version_in_the_path(running: Running) -> None:
    reply = running.classify(CLIENT, {"x-model-version": "v2"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == "2"
    assert reply.headers["x-model-version"] == "2"
    (infer,) = infers(running.seen())
    assert infer["path"] == "/v2/models/digits/versions/2/infer"
    assert infer["x-model-version"] is None  # the choice is in the path; nothing for a mesh to match
