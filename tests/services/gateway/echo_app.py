"""A stand-in upstream for client and pipeline-route tests (run under uvicorn as a real process).

GET/POST /echo: 200 with the request's headers, path and body size as JSON.
/status/<code>: answers that code. /chunked: the echo, chunked. /sleep/<ms>: answers 200 after that long.
With ECHO_STATUS set, every answer has that status. With ECHO_CRASH_MARKER set, a body containing
it kills the process on the spot (a query of death, as a parser bug would). Every answer names the
process (x-served-by = ECHO_NAME) and sets x-model-version: 7. /hop answers with hop-by-hop headers,
/shed 503 + Retry-After (load shed), /dependency 503 naming a failed dependency.
"""

from __future__ import annotations

import asyncio
import os

import orjson

SERVED_BY = os.environ.get("ECHO_NAME", "echo").encode()
FIXED_STATUS = int(os.environ.get("ECHO_STATUS", "0"))  # a broken replica: answers this to everything
CRASH_MARKER = os.environ.get("ECHO_CRASH_MARKER", "").encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if CRASH_MARKER and CRASH_MARKER in body:
        os._exit(134)  # as abort() would: no answer, the connection reset
    path: str = scope["path"]
    status = FIXED_STATUS or 200
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
    elif path.startswith("/sleep/"):
        await asyncio.sleep(int(path.rsplit("/", 1)[1]) / 1000)
    payload = orjson.dumps(
        {
            "path": path,
            "query": scope["query_string"].decode(),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body_bytes": len(body),
        }
    )
    headers = [(b"content-type", b"application/json"), (b"x-served-by", SERVED_BY), (b"x-model-version", b"7")]
    if path == "/shed":  # admission control's answer: load, not a fault
        status = 503
        headers.append((b"retry-after", b"1"))
    elif path == "/dependency":  # a business API whose stage failed
        status = 503
        headers.append((b"x-meshserve-dependency-failed", b"some-stage"))
    if path == "/hop":
        headers += [(b"connection", b"x-upstream-private"), (b"x-upstream-private", b"1"), (b"keep-alive", b"5")]
        headers += [(b"proxy-authenticate", b"Basic"), (b"trailer", b"x-t")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if path == "/chunked":  # no content-length: uvicorn frames it with chunked encoding
        half = len(payload) // 2
        await send({"type": "http.response.body", "body": payload[:half], "more_body": True})
        await send({"type": "http.response.body", "body": payload[half:]})
        return
    await send({"type": "http.response.body", "body": payload})
