"""A stand-in for Istio in front of real model servers (run under uvicorn as a real process).

It routes like the VirtualService mesh/compile/istio.py writes for a model host: a version in the
path (`/versions/<v>/`) goes to that version; else an `x-model-version` header matching `^v?<v>$`
goes to that version; else the default version (STANDIN_DEFAULT). Upstreams: STANDIN_UPSTREAMS =
`1=127.0.0.1:PORT,2=127.0.0.1:PORT`. It never retries, and records every request it got.

Control: GET /_standin/seen (the requests so far, JSON), POST /_standin/reset (forget them),
POST /_standin/fail/<n> (answer the next n infer requests 503 + Retry-After, without forwarding),
POST /_standin/truncate/<n> (forward the next n infer requests, then cut 4 bytes off the 200 answer's body).
"""

from __future__ import annotations

import os
import re

import httpx
import orjson

UPSTREAMS = {
    int(version): address
    for version, _, address in (item.partition("=") for item in os.environ["STANDIN_UPSTREAMS"].split(","))
}
DEFAULT = int(os.environ.get("STANDIN_DEFAULT", min(UPSTREAMS)))
PATH_VERSION = re.compile(r"^/v2/models/[^/]+/versions/(\d+)(/|$)")
PASSED_BACK = {b"content-type", b"inference-header-content-length", b"x-model-version", b"retry-after"}

seen: list[dict] = []
failing = {"left": 0}
truncating = {"left": 0}
_client: httpx.AsyncClient | None = None


def route(path: str, header: str | None) -> int:
    match = PATH_VERSION.match(path)
    if match:
        return int(match.group(1))
    for version in UPSTREAMS:
        if header is not None and re.fullmatch(rf"v?{version}", header):
            return version
    return DEFAULT


async def _body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _answer(send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def app(scope, receive, send):
    global _client
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    body = await _body(receive)
    json = [(b"content-type", b"application/json")]
    if path == "/_standin/seen":
        return await _answer(send, 200, orjson.dumps(seen), json)
    if path == "/_standin/reset":
        seen.clear()
        failing["left"] = truncating["left"] = 0
        return await _answer(send, 200, b"{}", json)
    if path.startswith("/_standin/fail/"):
        failing["left"] = int(path.rsplit("/", 1)[1])
        return await _answer(send, 200, b"{}", json)
    if path.startswith("/_standin/truncate/"):
        truncating["left"] = int(path.rsplit("/", 1)[1])
        return await _answer(send, 200, b"{}", json)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    version = route(path, headers.get("x-model-version"))
    record = {"method": method, "path": path, "x-model-version": headers.get("x-model-version"), "routed": version}
    seen.append(record)
    if path.endswith("/infer") and failing["left"] > 0:
        failing["left"] -= 1
        record["answered"] = 503
        return await _answer(send, 503, b'{"error": "stand-in: injected failure"}', [*json, (b"retry-after", b"1")])
    if _client is None:
        _client = httpx.AsyncClient(timeout=10)
    forwarded = {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")}
    reply = await _client.request(method, f"http://{UPSTREAMS[version]}{path}", content=body, headers=forwarded)
    record["answered"] = reply.status_code
    back = [(k, v) for k, v in reply.headers.raw if k.lower() in PASSED_BACK]
    content = reply.content
    if path.endswith("/infer") and reply.status_code == 200 and truncating["left"] > 0:
        truncating["left"] -= 1
        content = content[:-4]
    return await _answer(send, reply.status_code, content, back)
