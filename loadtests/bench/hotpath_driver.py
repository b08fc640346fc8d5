"""One tree's model-server infer path in process, for hotpath.py: `python hotpath_driver.py TREE N MODE`.

Builds the tree's ASGI app on its own `models/` (digits, version 2), sends N binary requests from 32
concurrent tasks (as wrk -c32 would; the batcher batches them) and prints one JSON line: Python
bytecodes executed per request on the event-loop thread, by function (MODE `ops`, a deterministic
count: sys.settrace with opcode events), or event-loop CPU microseconds per request (MODE `cpu`).
MODE `protocol-plain` / `protocol-guarded`: the same count for the HTTP protocol alone: uvicorn's
httptools protocol with uvicorn's defaults, or what the tree serves with (services.common.httpserver's
config: the guard, no X-Forwarded-* rewriting; uvicorn's defaults in trees without it).
MODE `gateway` (one more argument: a model server's port): the tree's gateway in process, its handle
and real upstream client, bytecodes per proxied request.
Run as a script so that TREE's `services` package, not this checkout's, is imported.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

CONCURRENCY = 32


def _tracer(counts: collections.Counter, tree: str) -> Any:
    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_filename.replace(tree, '').split('site-packages/')[-1]}:{code.co_name}"] += 1
        return trace

    return trace


async def _drive(tree: str, n: int, mode: str, body: bytes, header_length: bytes) -> dict:
    from services.modelserver import app as appmod  # the tree's

    settings_cls = appmod.Settings
    app = appmod.build_app(settings_cls(repository=Path(tree) / "models", models={"digits": 2}))
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"startup failed: {started}")
    state = getattr(app, "plane", None) or app.state
    for _ in range(600):
        if state.repository.ready():
            break
        await asyncio.sleep(0.05)
    headers = [
        (b"host", b"bench"),
        (b"content-length", str(len(body)).encode()),
        (b"inference-header-content-length", header_length),
    ]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v2/models/digits/infer", "raw_path": b"/v2/models/digits/infer", "query_string": b"",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {}}  # fmt: skip
    statuses: collections.Counter = collections.Counter()

    async def one() -> None:
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            return {}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        await app(dict(scope), receive, send)

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(worker(20) for _ in range(CONCURRENCY)))  # warm
    per_task = max(1, n // CONCURRENCY)
    total = per_task * CONCURRENCY
    counts: collections.Counter = collections.Counter()
    if mode == "ops":
        sys.settrace(_tracer(counts, tree))
    cpu = time.thread_time()
    await asyncio.gather(*(worker(per_task) for _ in range(CONCURRENCY)))
    cpu = time.thread_time() - cpu
    sys.settrace(None)
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await lifespan
    if set(statuses) != {200}:
        raise SystemExit(f"not every request answered 200: {dict(statuses)}")
    result: dict = {"requests": total, "cpu_us_per_request": cpu / total * 1e6}
    if mode == "ops":
        result["ops_per_request"] = sum(counts.values()) / total
        result["by_function"] = {k: v / total for k, v in counts.most_common()}
    return result


_REQUEST_HEAD = (
    b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: %d\r\n"
    b"Inference-Header-Content-Length: %s\r\n\r\n"
)


async def _drive_protocol(tree: str, n: int, guarded: bool, body: bytes, header_length: bytes) -> dict:
    """uvicorn's httptools protocol (or the tree's guarded one) alone: keep-alive requests fed through a
    fake transport to an app that answers at once; bytecodes per request on the loop thread."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    request = _REQUEST_HEAD % (len(body), header_length) + body
    answer = b"x" * 300
    loop = asyncio.get_running_loop()
    done: list[asyncio.Future] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"300")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        done[0].set_result(None)

    class Transport(asyncio.Transport):
        def write(self, data: bytes) -> None:
            pass

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def close(self) -> None:
            pass

    # plain: uvicorn's httptools protocol under uvicorn's defaults (X-Forwarded-* rewriting on);
    # served: the tree's own services.common.httpserver.config (a tree without it served the model
    # server with uvicorn's defaults: the plain case)
    config = uvicorn.Config(app, http="httptools", access_log=False, log_config=None, server_header=False)
    if guarded:
        try:
            from services.common.httpserver import HttpLimits
            from services.common.httpserver import config as served  # the tree's
        except ImportError:
            pass
        else:
            config = served(app, limits=HttpLimits())
    config.load()
    cls: Any = config.http_protocol_class if guarded else HttpToolsProtocol
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(Transport())
    counts: collections.Counter = collections.Counter()
    for i in range(n + 200):
        if i == 200:
            sys.settrace(_tracer(counts, tree))
        done[:] = [loop.create_future()]
        protocol.data_received(request)
        await done[0]
    sys.settrace(None)
    return {"requests": n, "ops_per_request": sum(counts.values()) / n,
            "by_function": {k: v / n for k, v in counts.most_common()}}  # fmt: skip


async def _drive_gateway(tree: str, n: int, body: bytes, header_length: bytes, upstream_port: int) -> dict:
    """The tree's gateway in process (`Gateway.handle` and its real upstream client) in front of a model
    server on `upstream_port`: bytecodes per proxied request on the loop thread, protocol excluded."""
    import tempfile

    import yaml

    from services.discovery.static import StaticDiscovery  # the tree's
    from services.gateway.app import Gateway

    folder = Path(tempfile.mkdtemp(prefix="meshserve-hotpath-gw-"))
    resilience = {
        "timeout": "10s",
        "retries": {"attempts": 2, "per_try_timeout": "5s"},
        "outlier_detection": {"consecutive_5xx_errors": 0},
        "connection_pool": {"max_connections": 64, "max_pending_requests": 128},
    }
    digits = {"versions": {1: {"replicas": 1}}, "traffic": {"weights": {1: 100}}, "resilience": resilience}
    consumer = {"username": "bench", "api_key": {"env": "HOTPATH_KEY"}, "rate_limit": {"second": 10**9}}
    spec = {
        "name": "hotpath",
        "repository": str(Path(tree) / "models"),
        "models": {"digits": digits},
        "gateway": {"consumers": [consumer]},
    }
    (folder / "mesh.yaml").write_text(yaml.safe_dump(spec))
    endpoint = {"service": "digits-v1", "instance": "digits-v1-0", "host": "127.0.0.1", "port": upstream_port}
    (folder / "endpoints.json").write_text(json.dumps({"services": {"digits-v1": [endpoint]}}))
    gateway = Gateway(folder / "mesh.yaml", StaticDiscovery(folder / "endpoints.json"), environ={"HOTPATH_KEY": "k"})
    await gateway.start()
    headers = [
        (b"host", b"bench"),
        (b"apikey", b"k"),
        (b"content-length", str(len(body)).encode()),
        (b"inference-header-content-length", header_length),
    ]
    scope = {"type": "http", "method": "POST", "path": "/v2/models/digits/infer", "query_string": b"",
             "raw_path": b"/v2/models/digits/infer", "headers": headers}  # fmt: skip
    statuses: collections.Counter = collections.Counter()

    async def one() -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        await gateway.handle(scope, receive, send)

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    concurrency = 16
    await asyncio.gather(*(worker(30) for _ in range(concurrency)))  # warm: connections open
    per_task = max(1, n // concurrency)
    counts: collections.Counter = collections.Counter()
    statuses.clear()
    sys.settrace(_tracer(counts, tree))
    await asyncio.gather(*(worker(per_task) for _ in range(concurrency)))
    sys.settrace(None)
    await gateway.stop()
    if set(statuses) != {200}:
        raise SystemExit(f"not every request answered 200: {dict(statuses)}")
    total = per_task * concurrency
    return {"requests": total, "ops_per_request": sum(counts.values()) / total,
            "by_function": {k: v / total for k, v in counts.most_common()}}  # fmt: skip


def main() -> None:
    tree, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    body, header_length = Path(sys.argv[4]).read_bytes(), sys.argv[5].encode()
    sys.path.insert(0, tree)
    import uvloop

    uvloop.install()
    if mode == "gateway":
        result = asyncio.run(_drive_gateway(tree, n, body, header_length, int(sys.argv[6])))
    elif mode.startswith("protocol-"):
        result = asyncio.run(_drive_protocol(tree, n, mode == "protocol-guarded", body, header_length))
    else:
        result = asyncio.run(_drive(tree, n, mode, body, header_length))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
