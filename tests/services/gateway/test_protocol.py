"""The Open Inference Protocol through the gateway with tritonclient: the gateway's own /v2 and
health, and model metadata/readiness/config that do not flip under a 90/10 split."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import tritonclient.http as triton

from mesh.spec import load_spec
from services.gateway import protocol
from services.gateway.policy import build_policy
from tests.services.gateway.stack import API_KEY, MODELS, Stack, base_spec, running

KEY = {"apikey": API_KEY}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("protocol"), base_spec(MODELS))
    with running(stack):
        stack.start_servers(MODELS, {("digits", 1): 1, ("digits", 2): 1})
        stack.start_gateway()
        yield stack


def client(stack: Stack) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(stack.url.removeprefix("http://"))


def test_server_health_and_metadata_are_the_gateways(stack: Stack) -> None:
    c = client(stack)
    assert c.is_server_live(headers=KEY) and c.is_server_ready(headers=KEY)
    assert c.get_server_metadata(headers=KEY)["name"] == protocol.NAME
    # the repository extension stays an admin API, unreachable through the gateway
    assert httpx.post(stack.url + "/v2/repository/index", headers=KEY, timeout=5).status_code == 404


def test_metadata_does_not_flip_under_the_split(stack: Stack) -> None:
    c = client(stack)
    answers = {tuple(c.get_model_metadata("digits", headers=KEY)["versions"]) for _ in range(40)}
    assert answers == {("1", "2")}
    configs = {c.get_model_config("digits", headers=KEY)["name"] for _ in range(10)}
    assert configs == {"digits"}
    assert all(c.is_model_ready("digits", headers=KEY) for _ in range(10))
    # a named version (path or override header) reaches that version
    assert c.get_model_metadata("digits", "2", headers=KEY)["versions"] == ["2"]
    headers = {**KEY, "x-model-version": "1"}
    assert c.get_model_metadata("digits", headers=headers)["versions"] == ["1"]
    assert c.is_model_ready("digits", "1", headers=KEY)
    # without a key, model data is refused
    assert httpx.get(stack.url + "/v2/models/digits", timeout=5).status_code == 401


def test_readiness_needs_a_host_for_every_route() -> None:
    policy = build_policy(load_spec(), {})
    status, body = protocol.own_answer("/v2/health/ready", policy, lambda route, version: True)
    assert (status, body) == (200, b'{"ready":true}')
    only_digits = lambda route, version: route.name == "digits"  # noqa: E731
    status, body = protocol.own_answer("/v2/health/ready", policy, only_digits)
    assert status == 503 and b"false" in body
    assert protocol.own_answer("/v2/health/live", policy, only_digits)[0] == 200


def test_metadata_version_is_the_heaviest() -> None:
    spec = load_spec()
    routes = build_policy(spec, {}).models
    for name, route in routes.items():
        weights = spec.models[name].weights()
        chosen = protocol.metadata_version(route)
        assert weights[chosen] == max(weights.values())
        assert all(protocol.choose_version(route, None, None, "", draw / 10) == chosen for draw in range(10))
