"""The chain runner (services/gateway/chain.py): phases in order, refusals, the response phase in any case.

Policies here are small recording ones: what is under test is how the chain runs whatever it is given.
The gateway's own policies are tested alone in the test module of each, and together through real
processes in test_gateway.py and friends.
"""

from __future__ import annotations

import asyncio

import pytest

from services.common.client import Client
from services.common.errors import HTTPError
from services.discovery.static import StaticDiscovery
from services.gateway.bodylimit import BodyLimit
from services.gateway.chain import PHASES, Chain, gateway_chain
from services.gateway.exchange import GatewayError
from services.gateway.forward import Forward, ResponseFilter
from services.gateway.keyauth import KeyAuth
from services.gateway.metrics import RequestMetrics
from services.gateway.mirror import Mirror
from services.gateway.proxy import Proxy
from services.gateway.ratelimit import RateLimit
from services.gateway.route import RouteMatch, VersionChoice
from tests.services.gateway.exchanges import exchange, snapshot

POLICY = snapshot()


class Recorder:
    """Records each phase it is called in; `refuse_in` raises there, `fail_in` raises a non-HTTP error."""

    def __init__(self, name: str, seen: list[str], refuse_in: str = "", fail_in: str = "") -> None:
        self.name, self.seen, self.refuse_in, self.fail_in = name, seen, refuse_in, fail_in

    def _hit(self, phase: str) -> None:
        self.seen.append(f"{self.name}.{phase}")
        if phase == self.refuse_in:
            raise GatewayError(418, f"{self.name} refused in {phase}")
        if phase == self.fail_in:
            raise RuntimeError(phase)

    def access(self, ex) -> None:
        self._hit("access")

    def forward(self, ex) -> None:
        self._hit("forward")

    def response(self, ex) -> None:
        self._hit("response")
        if ex.status == 0:
            ex.status, ex.payload, ex.response_headers = 200, b"ok", []

    def log(self, ex) -> None:
        self._hit("log")


class Terminal(Recorder):
    async def read(self, ex) -> None:
        self._hit("read")

    async def proxy(self, ex) -> None:
        self._hit("proxy")


def run(chain: Chain):
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    ex = exchange(POLICY, "/v2/models/digits/infer")
    asyncio.run(chain.run(ex, send))
    return ex, sent


def test_each_phase_runs_its_policies_in_the_chains_order() -> None:
    seen: list[str] = []
    _, sent = run(Chain([Recorder("a", seen), Terminal("t", seen), Recorder("b", seen)]))
    assert seen == [
        "a.access", "t.access", "b.access", "t.read",
        "a.forward", "t.forward", "b.forward", "t.proxy",
        "a.response", "t.response", "b.response",
        "a.log", "t.log", "b.log",
    ]  # fmt: skip
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"
    assert (b"content-length", b"2") in sent[0]["headers"]


def test_a_refusal_answers_and_skips_every_later_phase_but_the_log() -> None:
    seen: list[str] = []
    ex, sent = run(Chain([Recorder("a", seen, refuse_in="access"), Recorder("b", seen), Terminal("t", seen)]))
    assert seen == ["a.access", "a.log", "b.log", "t.log"]
    assert (ex.status, sent[0]["status"], sent[1]["body"]) == (418, 418, b'{"message":"a refused in access"}')


def test_the_response_phase_runs_even_when_the_upstream_call_fails() -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError):
        run(Chain([Recorder("m", seen), Terminal("t", seen, fail_in="proxy")]))
    assert seen[-2:] == ["m.response", "t.response"]  # e.g. the mirror's copy is told the primary gave nothing


def test_a_chain_needs_exactly_one_proxy_and_no_policy_without_a_phase() -> None:
    with pytest.raises(TypeError, match="exactly one proxy"):
        Chain([Recorder("a", [])])
    with pytest.raises(TypeError, match="exactly one proxy"):
        Chain([Terminal("a", []), Terminal("b", [])])
    with pytest.raises(TypeError, match="without a phase method"):
        Chain([Terminal("t", []), object()])


def test_the_gateways_chain_order(tmp_path) -> None:
    table = tmp_path / "endpoints.json"
    table.write_text('{"services": {}}')
    chain = gateway_chain(Client(StaticDiscovery(table)))
    kinds = [type(p) for p in chain.policies]
    assert kinds == [
        RouteMatch,
        KeyAuth,
        RateLimit,
        VersionChoice,
        BodyLimit,
        Forward,
        Mirror,
        Proxy,
        ResponseFilter,
        RequestMetrics,
    ]
    assert [type(step.__self__) for step in chain.access] == [RouteMatch, KeyAuth, RateLimit, VersionChoice, BodyLimit]
    assert [type(step.__self__) for step in chain.forward] == [Forward, Mirror]
    assert [type(step.__self__) for step in chain.response] == [Mirror, ResponseFilter]
    assert set(PHASES) == {"access", "read", "forward", "proxy", "response", "log"}
    assert issubclass(GatewayError, HTTPError)
