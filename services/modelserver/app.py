"""The model server's ASGI app: a lean raw-ASGI infer route in front of a FastAPI app for the rest.

POST /v2/models/{m}[/versions/{v}]/infer never touches FastAPI, pydantic or per-request logging
(a plain ASGI callable serves about twice the requests of a FastAPI route); health, metadata, the
repository extension, /metrics and the OpenAPI docs are ordinary FastAPI routes (routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from services.common.asgi import BodyTooLarge, ClientGone, read_body
from services.common.compression import UnsupportedEncoding, decompress
from services.common.errors import ProtocolError, error_body
from services.common.tracing import trace_asgi
from services.common.v2wire import split_body, split_model_path, write_response
from services.modelserver.codec import InferRequest, decode_request
from services.modelserver.dataplane import DataPlane, Output, Settings
from services.modelserver.repository import ServingVersion
from services.modelserver.routes import ServerInfo, build_api

log = logging.getLogger(__name__)

SERVER_NAME = "meshserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["model_repository", "binary_tensor_data", "model_configuration", "statistics"]
SERVER = ServerInfo(SERVER_NAME, SERVER_VERSION, tuple(EXTENSIONS))
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
            model, version, rest = split_model_path(path)
            if rest != "infer" or not model or version == "":
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


def build_app(settings: Settings) -> InferenceApp:
    plane = DataPlane(settings)
    return InferenceApp(plane, build_api(plane, SERVER, _lifespan(plane)))


def _lifespan(plane: DataPlane) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Start-up and shut-down of what the data plane runs beside requests: the decoder process, the
    repository's first scan and its polling; the repository closes last."""
    repository, settings = plane.repository, plane.settings

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

    return lifespan
