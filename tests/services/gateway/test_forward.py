"""Forward and ResponseFilter alone (services/gateway/forward.py)."""

from __future__ import annotations

import orjson

from services.common.client import Reply
from services.gateway.forward import Forward, ResponseFilter
from services.gateway.keyauth import KeyAuth
from services.gateway.route import RouteMatch, VersionChoice
from tests.services.gateway.exchanges import KEY, PIPELINE_ROUTE, exchange, snapshot

POLICY = snapshot()


def test_upstream_gets_the_raw_target_the_kept_query_and_no_credentials() -> None:
    headers = {"apikey": KEY, "x-api-key": KEY, "connection": "close", "x-request-id": "rid", "a": "1"}
    ex = exchange(POLICY, "/v2/models/digits/infer", headers, query=b"apikey=" + KEY.encode() + b"&b=%20")
    ex.raw_path = b"/v2/models/digits/%69nfer"  # as the client spelled it
    KeyAuth().access(ex)
    Forward().forward(ex)
    assert ex.outgoing == {"a": "1", "x-request-id": "rid", "x-consumer-username": "demo"}
    assert ex.target == "/v2/models/digits/%69nfer?b=%20"


def routed(path: str, headers: dict[str, str] | None = None, method: str = "POST"):
    ex = exchange(POLICY, path, headers, method=method)
    RouteMatch().access(ex)
    VersionChoice(lambda: 0.0).access(ex)
    return ex


def test_an_answer_without_its_own_version_names_the_chosen_one() -> None:
    ex = routed("/v2/models/digits/infer")
    ex.reply = Reply(200, [(b"Content-Length", b"2"), (b"Keep-Alive", b"5"), (b"X-Up", b"1")], b"{}", "i")
    ResponseFilter().response(ex)
    assert (ex.status, ex.payload, ex.answered_version) == (200, b"{}", "1")
    assert [n for n, _ in ex.response_headers] == [b"x-up", b"x-request-id", b"x-model-version"]
    ex = routed("/v2/models/digits/infer")
    ex.reply = Reply(503, [(b"x-model-version", b"2")], b"{}", "i")
    ResponseFilter().response(ex)
    assert ex.answered_version == "2" and (b"x-model-version", b"1") not in ex.response_headers


def test_unversioned_metadata_lists_every_served_version() -> None:
    ex = routed("/v2/models/digits", method="GET")
    ex.reply = Reply(200, [], orjson.dumps({"name": "digits", "versions": ["1"]}), "i")
    ResponseFilter().response(ex)
    assert orjson.loads(ex.payload)["versions"] == ["1", "2"]
    ex = routed("/v2/models/digits/versions/1", method="GET")
    ex.reply = Reply(200, [], orjson.dumps({"name": "digits", "versions": ["1"]}), "i")
    ResponseFilter().response(ex)
    assert orjson.loads(ex.payload)["versions"] == ["1"]


def test_no_reply_leaves_the_answer_to_whoever_made_it() -> None:
    ex = routed(PIPELINE_ROUTE)
    ex.status, ex.payload = 503, b"x"
    ResponseFilter().response(ex)
    assert (ex.status, ex.payload, ex.response_headers) == (503, b"x", None)
