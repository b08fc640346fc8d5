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

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from services.common.asgi import BodyTooLarge, ClientGone, read_body
from services.common.compression import UnsupportedEncoding, decompress
from services.common.errors import ProtocolError, error_body, quoted
from services.common.telemetry import setup_service
from services.common.tracing import trace_asgi
from services.common.v2wire import split_body, write_response
from services.modelserver.codec import InferRequest, decode_request
from services.modelserver.dataplane import DataPlane, Output, Settings
from services.modelserver.repository import ServingVersion, is_version
from services.modelserver.triton import model_config, model_statistics

log = logging.getLogger(__name__)

SERVER_NAME = "meshserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["model_repository", "binary_tensor_data", "model_configuration", "statistics"]
_INFER_PREFIX = "/v2/models/"
_INFER_SUFFIX = "/infer"
_JSON = b"application/json"
_OCTET = b"application/octet-stream"


async def _send(send: Send, status: int, body: bytes, content_type: bytes = _JSON, extra: tuple | list = ()) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _check_content_length(scope: Scope, limit: int) -> tuple[str | None, str | None]:
    """413 for a declared length over `limit`; returns Inference-Header-Content-Length and
    Content-Encoding if given."""
    header_length = encoding = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            if not value.isdigit():
                raise ProtocolError(400, "Content-Length is not a number")
            if int(value) > limit:
                raise ProtocolError(413, f"request body of {int(value)} bytes is over the limit of {limit}")
        elif key == b"inference-header-content-length":
            header_length = value.decode("latin-1")
        elif key == b"content-encoding":
            encoding = value.decode("latin-1")
    return header_length, encoding


async def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """A compressed body inflated off the event loop, under the body limit (decoded size)."""
    try:
        return await asyncio.to_thread(decompress, body, encoding, limit)
    except BodyTooLarge as exc:
        raise ProtocolError(413, f"decoded {exc}") from None
    except UnsupportedEncoding as exc:
        raise ProtocolError(415, str(exc)) from None
    except ValueError as exc:
        raise ProtocolError(400, f"Content-Encoding {encoding}: {exc}") from None


class InferenceApp:
    """The ASGI callable uvicorn runs: infer here, everything else to FastAPI."""

    def __init__(self, plane: DataPlane, api: FastAPI) -> None:
        self.plane = plane
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
        limit = self.plane.settings.max_body_bytes
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
        plane = self.plane
        try:
            plane.refuse_if_draining()  # early, before a body that may take long to arrive
            parts = path[len(_INFER_PREFIX) : -len(_INFER_SUFFIX)].split("/")
            if len(parts) == 1 and parts[0]:
                model, version = parts[0], None
            elif len(parts) == 3 and parts[1] == "versions" and parts[0]:
                model, version = parts[0], parts[2]
            else:
                raise ProtocolError(404, f"no such endpoint: POST {path}")
            limit = plane.settings.max_body_bytes
            header_length, encoding = _check_content_length(scope, limit)
            try:
                body = await read_body(receive, limit)
            except BodyTooLarge as exc:
                raise ProtocolError(413, str(exc)) from None
            if encoding is not None:
                body = await _decoded(body, encoding, limit)
            parts = split_body(body, header_length)
            if len(parts[0]) < plane.decoder.threshold:
                answer = await plane.infer(model, version, decode_request, parts, _encode, start)
            else:  # a large JSON part: decoded in another process (decodepool.py)
                answer = await plane.infer(model, version, plane.decoder.decode, parts, _encode, start, True)
            await _send(send, *answer)
        except ProtocolError as exc:
            await _send(send, exc.status, error_body(exc.message), extra=exc.headers)
        except ClientGone:
            pass  # the client went away while sending its body


def _encode(serving: ServingVersion, request: InferRequest, outputs: list[Output]) -> tuple:
    """The REST answer: JSON, or JSON header + binary tensors (binary data extension)."""
    payload, json_length = write_response(serving.model, serving.name_version, request.id, outputs)
    extra = [(b"x-model-version", serving.header_version)]
    if json_length is None:
        return 200, payload, _JSON, extra
    extra.append((b"inference-header-content-length", str(json_length).encode()))
    return 200, payload, _OCTET, extra


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


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(error_body(message), status, headers, media_type="application/json")


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
            "device": serving.runtime.device,
        },
    }


def build_api(plane: DataPlane) -> FastAPI:
    repository = plane.repository
    settings = plane.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        plane.decoder.start()
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
            await asyncio.to_thread(plane.decoder.close)
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
    async def _protocol_error(_: Request, exc: ProtocolError) -> Response:
        return _error(exc.status, exc.message, {k.decode(): v.decode() for k, v in exc.headers})

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return _error(400, f"invalid request: {exc.errors()}")

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @api.get("/v2")
    async def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    @api.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        is_ready = plane.ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    # Triton's statistics extension; before the metadata route, which would take "stats" for a model name
    @api.get("/v2/models/stats")
    @api.get("/v2/models/{model}/stats")
    @api.get("/v2/models/{model}/versions/{version}/stats")
    async def model_stats(model: str | None = None, version: str | None = None) -> dict:
        return model_statistics(repository, model, version)

    @api.get("/v2/models/{model}/config")
    @api.get("/v2/models/{model}/versions/{version}/config")
    async def model_configuration(model: str, version: str | None = None) -> dict:
        """Triton's model configuration extension (what perf_analyzer asks first)."""
        return model_config(repository.get(model, version))

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
    plane = DataPlane(settings)
    return InferenceApp(plane, build_api(plane))
