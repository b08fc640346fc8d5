"""The business API of one pipeline (service name = pipeline name): serves the pipeline's route.

POST <route> (e.g. /v1/digits:classify): an image in (whatever image-preprocess accepts); out
{"label", "score", "top_k", "model_version"} with headers x-request-id and x-model-version. It runs the
stages in the spec's order, each through the ONE shared client (services.common.client: pooled
connections, retries, outlier ejection, x-request-id/traceparent propagation). The model version is
chosen by the gateway's own rule (services.gateway.policy.ModelRoute.resolve: the override header,
else the weighted split), so the split exists once; the spec is re-read when mesh.yaml changes.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from mesh.spec import MeshSpec, Pipeline, SpecError, load_spec
from services.common.client import Client, Reply, UpstreamError, bind_request_headers
from services.common.files import file_identity
from services.discovery import Discovery
from services.gateway.policy import ModelRoute, RouteError, build_model_route
from services.pipeline.service import JSON, BadRequest, create_app, error_response
from services.pipeline.tensors import OCTET, SHAPE_HEADER, from_raw, shape_header, v2_infer_request, v2_output

log = logging.getLogger(__name__)

STAGE_PATHS = {"image-preprocess": "/v1/preprocess", "classification-postprocess": "/v1/postprocess"}


@dataclass(frozen=True)
class Plan:
    """What one spec snapshot says about this pipeline."""

    pipeline: Pipeline
    model: ModelRoute
    stage_services: tuple[tuple[str, str], ...]  # (service, stage kind) in order, "" for the model stage


def make_plan(spec: MeshSpec, name: str) -> Plan:
    pipeline = spec.pipelines[name]
    stages = tuple((f"{name}-{s.name}", s.kind or "") for s in pipeline.stages)
    return Plan(pipeline, build_model_route(pipeline.model_stage().model, spec), stages)


class LiveSpec:
    """The pipeline's plan, rebuilt when mesh.yaml is replaced (checked at most every `interval`)."""

    def __init__(self, path: Path, name: str, interval: float = 0.5) -> None:
        self.path, self.name, self.interval = path, name, interval
        self._identity = file_identity(path)
        self.plan = make_plan(load_spec(path, check_repository=False), name)
        self._checked = time.monotonic()

    def current(self) -> Plan:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            identity = file_identity(self.path)
            if identity is not None and identity != self._identity:
                self._identity = identity
                try:
                    self.plan = make_plan(load_spec(self.path, check_repository=False), self.name)
                    log.info("mesh spec reloaded: weights %s", self.plan.model.split_versions)
                except (SpecError, KeyError) as exc:
                    log.error("mesh spec change ignored, keeping the previous one: %s", exc)
        return self.plan


class StageFailed(Exception):
    """A hop answered with an error: `status` and {"error"} for the caller."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error_text(reply: Reply) -> str:
    try:
        return str(orjson.loads(reply.body).get("error", reply.body[:200]))
    except (orjson.JSONDecodeError, AttributeError):
        return reply.body[:200].decode(errors="replace")


class PipelineRunner:
    """Runs one request through the stages."""

    def __init__(self, live: LiveSpec, client: Client) -> None:
        self.live = live
        self.client = client
        self.signatures: dict[str, tuple[str, str]] = {}  # model service -> (input name, output name)

    async def _stage(self, plan: Plan, service: str, kind: str, body: bytes, headers: dict[str, str]) -> Reply:
        reply = await self.client.request(
            service, "POST", STAGE_PATHS[kind], resilience=plan.pipeline.resilience, body=body, headers=headers
        )
        if 400 <= reply.status < 500:  # the caller's input was refused: pass it on as is
            raise StageFailed(reply.status, _error_text(reply))
        if reply.status != 200:
            raise StageFailed(502, f"{service} answered {reply.status}: {_error_text(reply)}")
        return reply

    async def _signature(self, route: ModelRoute, version: int) -> tuple[str, str]:
        service = route.services[version]
        known = self.signatures.get(service)
        if known is None:
            reply = await self.client.request(
                service, "GET", f"/v2/models/{route.name}/versions/{version}", resilience=route.resilience
            )
            if reply.status != 200:
                raise StageFailed(502, f"{service} metadata answered {reply.status}: {_error_text(reply)}")
            meta = reply.json()
            known = (meta["inputs"][0]["name"], meta["outputs"][0]["name"])
            self.signatures[service] = known
        return known

    async def _model(self, route: ModelRoute, version: int, tensor: np.ndarray) -> np.ndarray:
        service = route.services[version]
        input_name, output_name = await self._signature(route, version)
        body, headers = v2_infer_request(input_name, tensor, [output_name])
        path = f"/v2/models/{route.name}/versions/{version}/infer"
        reply = await self.client.request(
            service, "POST", path, resilience=route.resilience, body=body, headers=headers
        )
        if reply.status == 503:  # overloaded: shed fast, tell the caller when to come back
            raise StageFailed(
                503, f"{service}: {_error_text(reply)}", {"retry-after": reply.headers.get("retry-after", "1")}
            )
        if reply.status != 200:
            raise StageFailed(502, f"{service} answered {reply.status}: {_error_text(reply)}")
        return v2_output(reply.body, reply.headers, output_name)

    async def run(self, plan: Plan, version: int, body: bytes, content_type: str) -> dict:
        payload, headers = body, {"content-type": content_type or JSON, "accept": OCTET}
        tensor: np.ndarray | None = None
        result: dict | None = None
        for service, kind in plan.stage_services:
            if not kind:
                assert tensor is not None, "the model stage needs a stage before it that makes a tensor"
                tensor = await self._model(plan.model, version, tensor)
                payload = tensor.astype("<f4", copy=False).tobytes()
                headers = {"content-type": OCTET, SHAPE_HEADER: shape_header(tensor.shape), "accept": OCTET}
                continue
            reply = await self._stage(plan, service, kind, payload, headers)
            if reply.headers.get("content-type", "").startswith(OCTET):
                tensor = from_raw(reply.body, reply.headers.get(SHAPE_HEADER))
                payload = reply.body
                headers = {"content-type": OCTET, SHAPE_HEADER: reply.headers[SHAPE_HEADER], "accept": OCTET}
            else:
                result = reply.json()
        if result is None or not result.get("predictions"):
            raise StageFailed(502, "the pipeline's last stage gave no predictions")
        first = result["predictions"][0]
        return {"label": first["label"], "score": first["score"], "top_k": first["top_k"], "model_version": version}


def build_app(name: str, spec_path: Path, discovery: Discovery):
    live = LiveSpec(spec_path, name)
    state: dict[str, PipelineRunner] = {}

    async def start() -> None:
        client = Client(discovery)
        client.start()
        state["pipeline"] = PipelineRunner(live, client)

    async def stop() -> None:
        await state["pipeline"].client.close()
        discovery.close()

    app = create_app(name, on_start=start, on_stop=stop)
    route = live.plan.pipeline.route

    async def classify(request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or os.urandom(16).hex()
        bind_request_headers({**request.headers, "x-request-id": request_id})
        headers = {"x-request-id": request_id}
        body = await request.body()
        plan = live.current()
        try:
            version = plan.model.resolve(None, request.headers.get(plan.model.header_name), random.random())
        except RouteError as exc:
            return error_response(exc.status, exc.message, headers)
        headers["x-model-version"] = str(version)
        try:
            result = await state["pipeline"].run(plan, version, body, request.headers.get("content-type", ""))
        except (StageFailed, BadRequest) as exc:
            return error_response(exc.status, exc.message, {**headers, **getattr(exc, "headers", {})})
        except UpstreamError as exc:
            if exc.retry_after is not None:
                headers["retry-after"] = str(exc.retry_after)
            return error_response(exc.status, str(exc), headers)
        return Response(orjson.dumps(result), 200, headers, media_type=JSON)

    app.add_api_route(route, classify, methods=["POST"])
    return app
