"""The model server's ASGI app: a lean raw-ASGI infer route in front of a FastAPI app for the rest.

POST /v2/models/{m}[/versions/{v}]/infer never touches FastAPI, pydantic or per-request logging
(a plain ASGI callable serves about twice the requests of a FastAPI route); health, metadata, the
repository extension, /metrics and the OpenAPI docs are ordinary FastAPI routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from services.common.asgi import BodyTooLarge, ClientGone, read_body
from services.common.telemetry import setup_service
from services.common.tracing import trace_asgi
from services.modelserver.codec import ProtocolError, decode_request, encode_response, error_body, quoted, split_body
from services.modelserver.decodepool import DecodePool
from services.modelserver.repository import Repository, ServingVersion, is_version

log = logging.getLogger(__name__)

SERVER_NAME = "meshserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["model_repository", "binary_tensor_data"]
_INFER_PREFIX = "/v2/models/"
_INFER_SUFFIX = "/infer"
_JSON = b"application/json"
_OCTET = b"application/octet-stream"
_RETRY_AFTER = ((b"retry-after", b"1"),)


@dataclass
class Settings:
    repository: Path
    models: dict[str, int | None] = field(default_factory=dict)  # --model filter
    config_overrides: dict[str, dict] = field(default_factory=dict)  # --config-override
    poll_interval: float = 2.0
    max_body_bytes: int = 64 * 1024 * 1024


class ServerState:
    """What the infer path and the shutdown path share: the repository, draining, requests in flight."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository = Repository(settings.repository, settings.models or None, settings.config_overrides)
        self.draining = False
        self.active = 0  # infer requests whose body has arrived and that are not yet answered
        self.decoder = DecodePool()

    def ready(self) -> bool:
        return not self.draining and self.repository.ready()

    def begin_drain(self) -> None:
        """Readiness goes false and new infer requests get 503; queued ones go out without delay."""
        if not self.draining:
            self.draining = True
            log.info("draining: readiness false, refusing new infer requests", extra={"in_flight": self.active})
        self.repository.start_flush()

    async def wait_idle(self, grace: float, limit: float) -> None:
        """Until no infer request is in flight and `grace` seconds passed (at most `limit` seconds)."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if self.active == 0 and time.monotonic() - start >= grace:
                return
            await asyncio.sleep(0.01)
        log.warning("drain limit reached with %d infer requests in flight", self.active)


async def _send(send: Send, status: int, body: bytes, content_type: bytes = _JSON, extra: tuple | list = ()) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _check_content_length(scope: Scope, limit: int) -> str | None:
    """413 for a declared length over `limit`; returns Inference-Header-Content-Length if given."""
    header_length = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            if not value.isdigit():
                raise ProtocolError(400, "Content-Length is not a number")
            if int(value) > limit:
                raise ProtocolError(413, f"request body of {int(value)} bytes is over the limit of {limit}")
        elif key == b"inference-header-content-length":
            header_length = value.decode("latin-1")
    return header_length


class InferenceApp:
    """The ASGI callable uvicorn runs: infer here, everything else to FastAPI."""

    def __init__(self, state: ServerState, api: FastAPI) -> None:
        self.state = state
        self.api = api
        self.infer_route = trace_asgi(self._infer_route)  # a SERVER span per infer when tracing is on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if scope["method"] == "POST" and path.startswith(_INFER_PREFIX) and path.endswith(_INFER_SUFFIX):
                await self.infer_route(scope, receive, send)
                return
            await self.limited_api(scope, receive, send)
            return
        await self.api(scope, receive, send)

    async def limited_api(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI behind --max-body-bytes too: Content-Length first, then the bytes as they arrive
        (a chunked body has no length); going over raises the 413 ProtocolError the app answers."""
        limit = self.state.settings.max_body_bytes
        try:
            _check_content_length(scope, limit)
        except ProtocolError as exc:
            await _send(send, exc.status, error_body(exc.message))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise ProtocolError(413, f"request body is larger than the limit of {limit} bytes")
            return message

        await self.api(scope, counted, send)

    async def _infer_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.infer(scope["path"], scope, receive, send)

    async def infer(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        state = self.state
        if state.draining:
            await _send(send, 503, error_body("server is shutting down; retry elsewhere"), extra=_RETRY_AFTER)
            return
        serving: ServingVersion | None = None
        outcome = "error"
        counted = False  # in flight only once the body is in: a slow sender must not hold the drain
        try:
            parts = path[len(_INFER_PREFIX) : -len(_INFER_SUFFIX)].split("/")
            if len(parts) == 1 and parts[0]:
                model, version = parts[0], None
            elif len(parts) == 3 and parts[1] == "versions" and parts[0]:
                model, version = parts[0], parts[2]
            else:
                raise ProtocolError(404, f"no such endpoint: POST {path}")
            limit = state.settings.max_body_bytes
            header_length = _check_content_length(scope, limit)
            try:
                body = await read_body(receive, limit)
            except BodyTooLarge as exc:
                raise ProtocolError(413, str(exc)) from None
            if state.draining:
                raise ProtocolError(503, "server is shutting down; retry elsewhere", _RETRY_AFTER)
            state.active += 1
            counted = True
            # Routed after the body is in. From here to the batcher's queue nothing awaits, except a
            # large JSON decode (another process): the version is looked up again after it, so one
            # swapped or unloaded meanwhile is never picked up half-closed.
            serving = state.repository.get(model, version)
            header, binary = split_body(body, header_length)
            if len(header) < state.decoder.threshold:
                request = decode_request(header, binary, serving.signature)
            else:
                request = await state.decoder.decode(header, binary, serving.signature)
                current = state.repository.get(model, version)
                if current is not serving:
                    if current.signature != serving.signature:
                        request = await state.decoder.decode(header, binary, current.signature)
                    serving = current
            results = await serving.batcher.infer(request)
            outputs = serving.signature.outputs
            payload, json_length = encode_response(
                serving.model,
                serving.name_version,
                request.id,
                [(name, outputs[name].datatype, results[name], binary) for name, binary in request.outputs],
            )
            extra = [(b"x-model-version", serving.header_version)]
            if json_length is None:
                await _send(send, 200, payload, _JSON, extra)
            else:
                extra.append((b"inference-header-content-length", str(json_length).encode()))
                await _send(send, 200, payload, _OCTET, extra)
            outcome = "success"
        except ProtocolError as exc:
            if exc.status == 503:
                outcome = "rejected"
            elif exc.status == 504:
                outcome = "timeout"
            await _send(send, exc.status, error_body(exc.message), extra=exc.headers)
        except ClientGone:
            pass  # the client went away while sending its body
        finally:
            if counted:
                state.active -= 1
            if serving is not None:
                metrics = serving.metrics
                metrics.outcome[outcome].inc()
                metrics.request_time.observe(time.perf_counter() - start)


# ---------------------------------------------------------------- FastAPI: everything but infer


async def _json_object(request: Request, what: str) -> dict:
    """The body as a JSON object ({} when empty), read raw: clients such as tritonclient send
    no Content-Type, so FastAPI's body parsing would refuse them."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"{what} body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(400, f"{what} body must be a JSON object, got {type(doc).__name__}")
    return doc


_INDEX_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}},
    }
}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _version_metadata(serving: ServingVersion, versions: list[int]) -> dict:
    sig = serving.signature
    return {
        "name": serving.model,
        "versions": [str(v) for v in versions],
        "platform": serving.config.platform,
        "inputs": [t.metadata() for t in sig.inputs.values()],
        "outputs": [t.metadata() for t in sig.outputs.values()],
        "parameters": {
            **serving.config.parameters,
            "max_batch_size": serving.config.max_batch_size,
            "description": serving.config.description,
            "execution_providers": serving.runtime.providers,
        },
    }


def build_api(state: ServerState) -> FastAPI:
    repository = state.repository
    settings = state.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.decoder.start()
        tasks = [asyncio.create_task(repository.poll(), name="initial-load")]
        if settings.poll_interval > 0:
            tasks.append(asyncio.create_task(repository.poll_forever(settings.poll_interval), name="poll"))
        log.info("model server started", extra={"repository": str(settings.repository)})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await repository.close()
            await asyncio.to_thread(state.decoder.close)
            log.info("model server stopped")

    api = FastAPI(
        title="meshserve model server",
        version=SERVER_VERSION,
        description="Open Inference Protocol (KServe v2) over onnxruntime. POST "
        "/v2/models/{model}[/versions/{version}]/infer is served by a lean ASGI route in front of this app.",
        lifespan=lifespan,
    )
    setup_service(api, "modelserver")

    @api.exception_handler(ProtocolError)
    async def _protocol_error(_: Request, exc: ProtocolError) -> JSONResponse:
        return _error(exc.status, exc.message, {k.decode(): v.decode() for k, v in exc.headers})

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"invalid request: {exc.errors()}")

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @api.get("/v2")
    async def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    @api.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        is_ready = state.ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @api.get("/v2/models/{model}")
    @api.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(model: str, version: str | None = None) -> dict:
        serving = repository.get(model, version)
        versions = sorted(repository.models[model].serving) if version is None else [serving.version]
        return _version_metadata(serving, versions)

    @api.get("/v2/models/{model}/ready")
    @api.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, version: str | None = None) -> JSONResponse:
        if model not in repository.models:
            return _error(404, f"unknown model {quoted(model)}")
        if version is not None and not is_version(version):
            return _error(404, f"unknown version {quoted(version)} of model {model!r}: versions are whole numbers")
        try:
            serving = repository.get(model, version)
        except ProtocolError:
            return JSONResponse({"name": model, "ready": False}, status_code=503)
        if not serving.health.healthy:  # failing (services/modelserver/health.py)
            return JSONResponse({"name": model, "ready": False}, status_code=503)
        return JSONResponse({"name": model, "ready": True})

    @api.post("/v2/repository/index", openapi_extra=_INDEX_BODY)
    async def repository_index(request: Request) -> list[dict]:
        ready = (await _json_object(request, "index request")).get("ready", False)
        if type(ready) is not bool:
            raise ProtocolError(400, f"index request: 'ready' must be true or false, got {type(ready).__name__}")
        return repository.index(ready_only=ready)

    @api.post("/v2/repository/models/{model}/load")
    async def repository_load(model: str, request: Request) -> dict:
        params = (await _json_object(request, "load request")).get("parameters") or {}
        if params:
            names = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ProtocolError(
                400,
                f"load parameters {names} are not supported: the server loads what the "
                "repository folder holds (edit config.yaml / the version folders instead)",
            )
        await repository.load(model)
        return {}

    @api.post("/v2/repository/models/{model}/unload")
    async def repository_unload(model: str) -> dict:
        await repository.unload(model)
        return {}

    return api


def build_app(settings: Settings) -> InferenceApp:
    state = ServerState(settings)
    return InferenceApp(state, build_api(state))
