"""The model server's FastAPI app: every route but infer (services.modelserver.app serves that one raw).

One small router per concern, composed in `build_api`: health, Triton's extensions (statistics,
configuration), model metadata and readiness, the repository extension. All of them read the data
plane's repository; errors render as every service's do (`{"error": ...}`, services.common.errors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.errors import ProtocolError, error_body, quoted
from services.common.telemetry import setup_service
from services.modelserver.dataplane import DataPlane
from services.modelserver.repository import Repository, ServingVersion, is_version
from services.modelserver.triton import model_config, model_statistics


@dataclass(frozen=True)
class ServerInfo:
    """What GET /v2 says (and gRPC's ServerMetadata)."""

    name: str
    version: str
    extensions: tuple[str, ...]


def build_api(
    plane: DataPlane, info: ServerInfo, lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]
) -> FastAPI:
    api = FastAPI(
        title="meshserve model server",
        version=info.version,
        description="Open Inference Protocol (KServe v2) over onnxruntime. POST "
        "/v2/models/{model}[/versions/{version}]/infer is served by a lean ASGI route in front of this app.",
        lifespan=lifespan,
    )
    setup_service(api, "modelserver")
    _error_handlers(api)
    api.include_router(_health(plane, info))
    api.include_router(_triton_extensions(plane.repository))  # before metadata, which would take "stats" for a model
    api.include_router(_models(plane.repository))
    api.include_router(_repository_extension(plane.repository))
    return api


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(error_body(message), status, headers, media_type="application/json")


def _error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ProtocolError)
    async def _protocol_error(_: Request, exc: ProtocolError) -> Response:
        return _error(exc.status, exc.message, {k.decode(): v.decode() for k, v in exc.headers})

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return _error(400, f"invalid request: {exc.errors()}")

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))


def _health(plane: DataPlane, info: ServerInfo) -> APIRouter:
    router = APIRouter()

    @router.get("/v2")
    async def server_metadata() -> dict:
        return {"name": info.name, "version": info.version, "extensions": list(info.extensions)}

    @router.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @router.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        is_ready = plane.ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    return router


def _triton_extensions(repository: Repository) -> APIRouter:
    router = APIRouter()

    @router.get("/v2/models/stats")
    @router.get("/v2/models/{model}/stats")
    @router.get("/v2/models/{model}/versions/{version}/stats")
    async def model_stats(model: str | None = None, version: str | None = None) -> dict:
        """Triton's statistics extension."""
        return model_statistics(repository, model, version)

    @router.get("/v2/models/{model}/config")
    @router.get("/v2/models/{model}/versions/{version}/config")
    async def model_configuration(model: str, version: str | None = None) -> dict:
        """Triton's model configuration extension (what perf_analyzer asks first)."""
        return model_config(repository.get(model, version))

    return router


def version_metadata(serving: ServingVersion, versions: list[int]) -> dict:
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


def _models(repository: Repository) -> APIRouter:
    router = APIRouter()

    @router.get("/v2/models/{model}")
    @router.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(model: str, version: str | None = None) -> dict:
        serving = repository.get(model, version)
        versions = sorted(repository.models[model].serving) if version is None else [serving.version]
        return version_metadata(serving, versions)

    @router.get("/v2/models/{model}/ready")
    @router.get("/v2/models/{model}/versions/{version}/ready")
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

    return router


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


def _repository_extension(repository: Repository) -> APIRouter:
    router = APIRouter()

    @router.post("/v2/repository/index", openapi_extra=_INDEX_BODY)
    async def repository_index(request: Request) -> list[dict]:
        ready = (await _json_object(request, "index request")).get("ready", False)
        if type(ready) is not bool:
            raise ProtocolError(400, f"index request: 'ready' must be true or false, got {type(ready).__name__}")
        return repository.index(ready_only=ready)

    @router.post("/v2/repository/models/{model}/load")
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

    @router.post("/v2/repository/models/{model}/unload")
    async def repository_unload(model: str) -> dict:
        await repository.unload(model)
        return {}

    return router
