"""The business API of one pipeline (service name = pipeline name): serves the pipeline's route.

POST <route> (e.g. /v1/digits:classify): an image in (whatever image-preprocess accepts); out
{"label", "score", "top_k", "model_version"} with headers x-request-id and x-model-version. It runs the
stages in the spec's order, each through the ONE shared client (services.common.client: pooled
connections, retries, outlier ejection, x-request-id/traceparent propagation). Who picks the model
version is services.common.traffic's one setting: locally the business API, by the rule the gateway uses
(services.common.routing.ModelRoute.resolve: the override header, else the weighted split), so the
split exists once; on Kubernetes Istio, with the business API calling the model's plain Service and
reading the version from the answer. The spec is re-read when mesh.yaml changes.

Errors tell "I failed" from "my dependency failed": the caller's input refused by a stage passes on as
that stage's 4xx; a stage or the model that failed answers 502 (it answered 5xx), 503 (unreachable,
overloaded; with Retry-After) or 504 (timed out), with {"error", "stage"} and the header
x-meshserve-dependency-failed naming the failing service, so the gateway does not eject this healthy
host for it. An error of the business API itself is a plain 500.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from mesh.spec import MeshSpec, Pipeline, Resilience, SpecError, load_spec, parse_version
from services.common.client import DEPENDENCY_FAILED_HEADER, Client, Reply, UpstreamError, bind_request_headers
from services.common.errors import HTTPError, ProtocolError, error_body
from services.common.files import file_identity
from services.common.routing import ModelRoute, RouteError, build_model_route
from services.common.traffic import TrafficSettings, single_try
from services.common.v2wire import (
    HEADER_LENGTH,
    OCTET,
    SHAPE_HEADER,
    raw_headers,
    read_raw,
    read_response,
    write_request,
)
from services.discovery import Discovery
from services.pipeline.service import JSON, BadRequest, create_app, error_response, read_body
from services.pipeline.shadow import Shadow

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024  # an image for the first stage (image-preprocess accepts no more)
STAGE_PATHS = {"image-preprocess": "/v1/preprocess", "classification-postprocess": "/v1/postprocess"}


@dataclass(frozen=True)
class Plan:
    """What one spec snapshot says about this pipeline."""

    pipeline: Pipeline
    model: ModelRoute
    stage_services: tuple[tuple[str, str], ...]  # (service, stage kind) in order, "" for the model stage
    stage_resilience: Resilience  # what the client applies itself (single try behind a sidecar)
    model_resilience: Resilience


def make_plan(spec: MeshSpec, name: str, traffic: TrafficSettings) -> Plan:
    """Built once per spec snapshot, so the client sees the same policy objects on every request."""
    pipeline = spec.pipelines[name]
    stages = tuple((f"{name}-{s.name}", s.kind or "") for s in pipeline.stages)
    route = build_model_route(pipeline.model_stage().model, spec)
    if traffic.mesh:
        return Plan(pipeline, route, stages, single_try(pipeline.resilience), single_try(route.resilience))
    return Plan(pipeline, route, stages, pipeline.resilience, route.resilience)


@dataclass(frozen=True)
class ModelCall:
    """Where one request's model stage goes: a version's own service (client mode; `version` known),
    or the model's plain service with the override header forwarded (mesh mode; Istio picks)."""

    service: str
    base_path: str  # /v2/models/<m>[/versions/<v>]: metadata here, infer at base_path + "/infer"
    headers: dict[str, str]
    version: int | None


def choose_model_call(plan: Plan, traffic: TrafficSettings, request_headers: Mapping[str, str]) -> ModelCall:
    """Raises RouteError (400/404) for an override header naming no version of the model, in both modes."""
    route = plan.model
    if not traffic.mesh:
        version = route.resolve(None, request_headers.get(route.header_name), random.random())
        return ModelCall(route.services[version], f"/v2/models/{route.name}/versions/{version}", {}, version)
    override = request_headers.get(traffic.version_header)
    headers = {}
    if override is not None:
        route.resolve(None, override, 0.0)  # the same 400/404 as locally; Istio then routes on it
        headers[traffic.version_header] = str(parse_version(override))  # bare number: the VS matches ^v?N$
    return ModelCall(route.name, f"/v2/models/{route.name}", headers, None)


class LiveSpec:
    """The pipeline's plan, rebuilt when mesh.yaml is replaced (checked at most every `interval`)."""

    def __init__(self, path: Path, name: str, traffic: TrafficSettings, interval: float = 0.5) -> None:
        self.path, self.name, self.traffic, self.interval = path, name, traffic, interval
        self._identity = file_identity(path)
        self.plan = make_plan(load_spec(path, check_repository=False), name, traffic)
        self._checked = time.monotonic()

    def current(self) -> Plan:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            identity = file_identity(self.path)
            if identity is not None and identity != self._identity:
                self._identity = identity
                try:
                    self.plan = make_plan(load_spec(self.path, check_repository=False), self.name, self.traffic)
                    log.info("mesh spec reloaded: weights %s", self.plan.model.split_versions)
                except (SpecError, KeyError) as exc:
                    log.error("mesh spec change ignored, keeping the previous one: %s", exc)
        return self.plan


class StageFailed(HTTPError):
    """A hop answered with an error: `status` and {"error"} for the caller; `stage` names the service
    that failed when it is a dependency's failure (a 5xx), empty when the caller's input was refused."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, stage: str = "") -> None:
        super().__init__(status, message)
        self.headers, self.stage = headers or {}, stage


def _model_output(service: str, reply: Reply, name: str) -> np.ndarray:
    """The model's output `name` as FP32; a body that is not a v2 infer response is the model's failure (502)."""
    try:
        tensor = read_response(reply.body, reply.headers.get(HEADER_LENGTH)).get(name)
    except ProtocolError as exc:
        raise StageFailed(
            502, f"{service} answered a body that is not a v2 infer response: {exc.message}", stage=service
        ) from None
    if tensor is None or tensor.dtype.kind not in "biuf":
        found = "no" if tensor is None else f"a {tensor.dtype} (not numeric)"
        raise StageFailed(502, f"{service}'s answer has {found} output {name!r}", stage=service)
    return tensor.astype(np.float32, copy=False)


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
        # (service, metadata path, forwarded headers) -> (input name, output name)
        self.signatures: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[str, str]] = {}
        self.shadow = Shadow(self._model)  # the spec's mirror, compared (services/pipeline/shadow.py)

    async def _stage(self, plan: Plan, service: str, kind: str, body: bytes, headers: dict[str, str]) -> Reply:
        reply = await self.client.request(
            service, "POST", STAGE_PATHS[kind], resilience=plan.stage_resilience, body=body, headers=headers
        )
        if 400 <= reply.status < 500:  # the caller's input was refused: pass it on as is
            raise StageFailed(reply.status, _error_text(reply))
        if reply.status != 200:
            raise StageFailed(502, f"{service} answered {reply.status}: {_error_text(reply)}", stage=service)
        return reply

    async def _signature(self, plan: Plan, call: ModelCall) -> tuple[str, str]:
        """Tensor names from the model's metadata, asked once per target (in mesh mode with the same
        override header as the infer, so both reach the same subset)."""
        key = (call.service, call.base_path, tuple(sorted(call.headers.items())))
        known = self.signatures.get(key)
        if known is None:
            reply = await self.client.request(
                call.service, "GET", call.base_path, resilience=plan.model_resilience, headers=call.headers
            )
            if reply.status != 200:
                message = f"{call.service} metadata answered {reply.status}: {_error_text(reply)}"
                raise StageFailed(502, message, stage=call.service)
            meta = reply.json()
            known = (meta["inputs"][0]["name"], meta["outputs"][0]["name"])
            self.signatures[key] = known
        return known

    async def _model(self, plan: Plan, call: ModelCall, tensor: np.ndarray) -> tuple[np.ndarray, int]:
        """The model's output and the version that computed it (in mesh mode, named by the answer)."""
        input_name, output_name = await self._signature(plan, call)
        body, headers = write_request({input_name: tensor.astype("<f4", copy=False)}, [output_name])
        reply = await self.client.request(
            call.service,
            "POST",
            f"{call.base_path}/infer",
            resilience=plan.model_resilience,
            body=body,
            headers={**headers, **call.headers},
        )
        if reply.status == 503:  # overloaded: shed fast, tell the caller when to come back
            retry_after = {"retry-after": reply.headers.get("retry-after", "1")}
            raise StageFailed(503, f"{call.service}: {_error_text(reply)}", retry_after, stage=call.service)
        if reply.status != 200:
            raise StageFailed(502, f"{call.service} answered {reply.status}: {_error_text(reply)}", stage=call.service)
        version = call.version
        if version is None:
            try:
                version = parse_version(reply.headers.get("x-model-version"))
            except ValueError:
                message = f"{call.service} answered without a valid x-model-version header"
                raise StageFailed(502, message, stage=call.service) from None
        return _model_output(call.service, reply, output_name), version

    async def run(self, plan: Plan, call: ModelCall, body: bytes, content_type: str) -> dict:
        payload, headers = body, {"content-type": content_type or JSON, "accept": OCTET}
        tensor: np.ndarray | None = None
        result: dict | None = None
        version = call.version
        for service, kind in plan.stage_services:
            if not kind:
                assert tensor is not None, "the model stage needs a stage before it that makes a tensor"
                model_input = tensor
                tensor, version = await self._model(plan, call, tensor)
                self.shadow.after_model(plan, call, model_input, tensor)
                payload = tensor.astype("<f4", copy=False).tobytes()
                headers = {**raw_headers(tensor.shape), "accept": OCTET}
                continue
            reply = await self._stage(plan, service, kind, payload, headers)
            if reply.headers.get("content-type", "").startswith(OCTET):
                try:
                    tensor = read_raw(reply.body, reply.headers.get(SHAPE_HEADER))
                except ProtocolError as exc:
                    raise StageFailed(
                        502, f"{service} answered a tensor that does not read: {exc.message}", stage=service
                    ) from None
                payload = reply.body
                headers = {**raw_headers(tensor.shape), "accept": OCTET}
            else:
                result = reply.json()
        if result is None or not result.get("predictions"):
            raise StageFailed(502, "the pipeline's last stage gave no predictions", stage=plan.stage_services[-1][0])
        first = result["predictions"][0]
        answer = {"label": first["label"], "score": first["score"], "top_k": first["top_k"]}
        return {**answer, "model_version": str(version)}


def dependency_failed(status: int, message: str, stage: str, headers: dict[str, str]) -> Response:
    """A stage (or the model) failed, not this service: 502/503/504 naming it in the body and in
    x-meshserve-dependency-failed, so the gateway does not eject this host for it (services.common.client)."""
    return Response(
        error_body(message, stage=stage), status, {**headers, DEPENDENCY_FAILED_HEADER: stage}, media_type=JSON
    )


def build_app(name: str, spec_path: Path, discovery: Discovery, traffic: TrafficSettings | None = None):
    """`traffic` defaults to the environment's setting (services.common.traffic), read here once."""
    traffic = TrafficSettings.from_env() if traffic is None else traffic
    live = LiveSpec(spec_path, name, traffic)
    state: dict[str, PipelineRunner] = {}

    async def start() -> None:
        client = Client(discovery)
        client.start()
        state["pipeline"] = PipelineRunner(live, client)

    async def stop() -> None:
        await state["pipeline"].shadow.close()
        await state["pipeline"].client.close()
        discovery.close()

    app = create_app(name, on_start=start, on_stop=stop)
    app.state.traffic = traffic
    route = live.plan.pipeline.route

    async def classify(request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or os.urandom(16).hex()
        bind_request_headers({**request.headers, "x-request-id": request_id})
        headers = {"x-request-id": request_id}
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BadRequest as exc:
            return error_response(exc.status, exc.message, headers)
        plan = live.current()
        try:
            call = choose_model_call(plan, traffic, request.headers)
        except RouteError as exc:
            return error_response(exc.status, exc.message, headers)
        if call.version is not None:
            headers["x-model-version"] = str(call.version)
        try:
            result = await state["pipeline"].run(plan, call, body, request.headers.get("content-type", ""))
        except BadRequest as exc:
            return error_response(exc.status, exc.message, headers)
        except StageFailed as exc:
            if not exc.stage:
                return error_response(exc.status, exc.message, {**headers, **exc.headers})
            return dependency_failed(exc.status, exc.message, exc.stage, {**headers, **exc.headers})
        except UpstreamError as exc:
            if exc.retry_after is not None:
                headers["retry-after"] = str(exc.retry_after)
            return dependency_failed(exc.status, str(exc), exc.service, headers)
        headers["x-model-version"] = result["model_version"]
        return Response(orjson.dumps(result), 200, headers, media_type=JSON)

    app.add_api_route(route, classify, methods=["POST"])
    return app
