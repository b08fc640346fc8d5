"""The model server's v2 gRPC front end (grpc.aio, on the same event loop as the REST app).

`inference.GRPCInferenceService` (the Open Inference Protocol plus Triton's configuration,
statistics and repository RPCs) and `grpc.health.v1.Health` (for Kubernetes' gRPC probes). Infer
goes through the same DataPlane as REST: same admission, batcher, counts and drain. Errors map to
gRPC status codes (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE for a full queue or draining,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED for size); message limits default to the REST body limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import ProtocolError
from services.common.proto import load
from services.modelserver.codec import InferRequest
from services.modelserver.dataplane import DataPlane, Output
from services.modelserver.grpc_codec import decode_infer, encode_infer, grpc_status_name
from services.modelserver.repository import ServingVersion
from services.modelserver.triton import model_config, model_statistics

log = logging.getLogger(__name__)

pb2, pb2_grpc = load()
SERVICE = "inference.GRPCInferenceService"


def _code(exc: ProtocolError) -> grpc.StatusCode:
    return grpc.StatusCode[grpc_status_name(exc)]


def _deadline_us(context: grpc.aio.ServicerContext) -> int | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(int(remaining * 1e6), 1)


class InferenceService(pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, server_name: str, server_version: str, extensions: list[str]) -> None:
        self.plane = plane
        self.repository = plane.repository
        self.metadata = pb2.ServerMetadataResponse(name=server_name, version=server_version, extensions=extensions)

    # ------------------------------------------------------------ health and metadata

    async def ServerLive(self, request: object, context: grpc.aio.ServicerContext) -> object:
        return pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: object, context: grpc.aio.ServicerContext) -> object:
        return pb2.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request: object, context: grpc.aio.ServicerContext) -> object:
        try:
            self.repository.get(request.name, request.version or None)
        except ProtocolError:
            return pb2.ModelReadyResponse(ready=False)
        return pb2.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: object, context: grpc.aio.ServicerContext) -> object:
        return self.metadata

    async def ModelMetadata(self, request: object, context: grpc.aio.ServicerContext) -> object:
        serving = await self._get(request.name, request.version, context)
        versions = sorted(self.repository.models[serving.model].serving) if not request.version else [serving.version]
        tensor = pb2.ModelMetadataResponse.TensorMetadata
        sig = serving.signature
        return pb2.ModelMetadataResponse(
            name=serving.model,
            versions=[str(v) for v in versions],
            platform=serving.config.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in sig.inputs.values()],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in sig.outputs.values()],
        )

    async def ModelConfig(self, request: object, context: grpc.aio.ServicerContext) -> object:
        serving = await self._get(request.name, request.version, context)
        config = json_format.ParseDict(model_config(serving), pb2.ModelConfig(), ignore_unknown_fields=True)
        return pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: object, context: grpc.aio.ServicerContext) -> object:
        try:
            stats = model_statistics(self.repository, request.name or None, request.version or None)
        except ProtocolError as exc:
            await context.abort(_code(exc), exc.message)
        return json_format.ParseDict(stats, pb2.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def _get(self, model: str, version: str, context: grpc.aio.ServicerContext) -> ServingVersion:
        try:
            return self.repository.get(model, version or None)
        except ProtocolError as exc:
            await context.abort(_code(exc), exc.message)
            raise  # abort raises; this keeps type checkers honest

    # ------------------------------------------------------------ repository

    async def RepositoryIndex(self, request: object, context: grpc.aio.ServicerContext) -> object:
        rows = self.repository.index(ready_only=request.ready)
        return pb2.RepositoryIndexResponse(models=[pb2.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    async def RepositoryModelLoad(self, request: object, context: grpc.aio.ServicerContext) -> object:
        if request.parameters:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"load parameters {sorted(request.parameters)} are not supported: the server loads what the "
                "repository folder holds (edit config.yaml / the version folders instead)",
            )
        try:
            await self.repository.load(request.model_name)
        except ProtocolError as exc:
            await context.abort(_code(exc), exc.message)
        return pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: object, context: grpc.aio.ServicerContext) -> object:
        try:
            await self.repository.unload(request.model_name)
        except ProtocolError as exc:
            await context.abort(_code(exc), exc.message)
        return pb2.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------ inference

    async def _infer(self, request: object, deadline_us: int | None) -> object:
        """One request through the data plane; ProtocolError for anything refused."""
        start = time.perf_counter()
        return await self.plane.infer(
            request.model_name, request.model_version or None, decode_infer, (request, deadline_us), self._encode, start
        )

    @staticmethod
    def _encode(serving: ServingVersion, decoded: InferRequest, outputs: list[Output]) -> object:
        return encode_infer(pb2, serving, decoded, outputs)

    async def ModelInfer(self, request: object, context: grpc.aio.ServicerContext) -> object:
        try:
            return await self._infer(request, _deadline_us(context))
        except ProtocolError as exc:
            await context.abort(_code(exc), exc.message)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[object]:
        """Each request on the stream runs as it arrives (so they batch together); each answer goes
        out when ready, carrying its request's id; a refused request answers error_message and the
        stream goes on."""
        answers: asyncio.Queue = asyncio.Queue()
        pending: set[asyncio.Task] = set()

        async def one(request: object) -> None:
            try:
                answer = pb2.ModelStreamInferResponse(infer_response=await self._infer(request, None))
            except ProtocolError as exc:
                answer = pb2.ModelStreamInferResponse(
                    error_message=exc.message,
                    infer_response=pb2.ModelInferResponse(id=request.id, model_name=request.model_name),
                )
            await answers.put(answer)

        async def read() -> None:
            async for request in requests:
                task = asyncio.create_task(one(request))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*list(pending))
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader
        finally:
            reader.cancel()


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING while the server is ready (for "" and the inference service)."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _status(self, service: str) -> int | None:
        if service not in ("", SERVICE):
            return None
        ready = self.plane.ready()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: object, context: grpc.aio.ServicerContext) -> object:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(0.5)


def build_server(
    plane: DataPlane, host: str, port: int, max_message_bytes: int, metadata: tuple[str, str, list[str]]
) -> tuple[grpc.aio.Server, int]:
    """The gRPC server bound to host:port (0 picks a free one); returns it and the bound port."""
    limit = max(max_message_bytes, plane.settings.max_body_bytes)
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane, *metadata), server)
    health_pb2_grpc.add_HealthServicer_to_server(Health(plane), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"gRPC could not bind {host}:{port}")
    return server, bound
