"""Faults through the gateway under steady load: a query-of-death body, a truncated mesh.yaml.

The replicas are echo processes (tests/services/gateway/echo_app.py) that die on a marker body, as a
model server did on a JSON tensor of more than 2^24 elements: whatever the model server's own fix,
the gateway must not replay such a body to every replica a retry can reach.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.services.gateway.stack import (
    API_KEY,
    MODELS,
    Background,
    Stack,
    base_spec,
    fire,
    running,
    start_echo,
)
from tests.services.modelserver.serverproc import wait_for

INFER = "/v2/models/digits/infer"
POISON = b'{"inputs": [], "marker": "QUERY-OF-DEATH"}'


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    spec = base_spec(MODELS, versions={1: {"replicas": 3}}, traffic={"weights": {1: 100}})
    root = tmp_path_factory.mktemp("faults")
    stack = Stack(root, spec)
    with running(stack):
        stack.servers["digits-v1"] = [
            start_echo(root, f"replica-{i}", env={"ECHO_CRASH_MARKER": "QUERY-OF-DEATH"}) for i in range(3)
        ]
        stack.start_gateway()
        yield stack


def dead(stack: Stack) -> list[int]:
    return [i for i, proc in enumerate(stack.servers["digits-v1"]) if proc.proc.poll() is not None]


def test_a_query_of_death_kills_at_most_two_replicas_and_nobody_else_sees_an_error(stack: Stack) -> None:
    url = stack.url + INFER
    with Background(url, concurrency=4) as load:
        poisoned = httpx.post(url, content=POISON, headers={"apikey": API_KEY}, timeout=10)
        assert poisoned.status_code == 502, poisoned.text
        assert "query of death" in poisoned.json()["error"]
        # Two resets: two replicas died (the exit completes just after the connection is reset).
        wait_for(lambda: len(dead(stack)) == 2, 10, "the two replicas the body reached to exit")
        killed = dead(stack)  # it used to be every replica a retry could reach: all three here
        # The supervisor's part: the dead replicas come back on their ports.
        for i in killed:
            old = stack.servers["digits-v1"][i]
            stack.servers["digits-v1"][i] = start_echo(
                stack.root, f"replica-{i}-again", port=old.port, env={"ECHO_CRASH_MARKER": "QUERY-OF-DEATH"}
            )
        # The same body again (a client's own retry): refused without reaching any replica.
        again = asyncio.run(fire(url, 5, 1, body=POISON, keep=True))
        assert Counter(r.status for r in again) == {502: 5}
        assert dead(stack) == []  # the third replica never got it, the two restarted ones neither
        before = len(load.results)
        wait_for(lambda: len(load.results) > before + 100, 20, "load to go on")
    assert load.failures() == [], Counter(r.status for r in load.failures())
    assert stack.metric("meshserve_gateway_rejected_total", upstream="digits-v1", reason="query_of_death") == 6


def test_a_truncated_spec_written_under_load_locks_nobody_out(stack: Stack) -> None:
    """mesh.yaml cut before its consumers (still valid: they default to empty) is refused while traffic
    flows; the old spec serves on, the refusal is visible; a spec that says allow_empty is applied."""
    url = stack.url + INFER
    full = stack.spec_path.read_text()
    cut = full[: full.index("gateway:")]
    with Background(url, concurrency=4) as load:
        stack.spec_path.write_text(cut)  # in place, as an editor or a copy that dies halfway would
        wait_for(lambda: stack.metric("meshserve_gateway_spec_reload_refused") == 1, 20, "the reload to be refused")
        before = len(load.results)
        wait_for(lambda: len(load.results) > before + 100, 20, "load to go on")
    assert Counter(r.status for r in load.results) == {200: len(load.results)}
    assert stack.metric("meshserve_gateway_spec_reloads_total", outcome="refused") >= 1

    stack.spec_path.write_text(cut + "gateway:\n  allow_empty: true\n")  # emptied on purpose
    wait_for(
        lambda: httpx.post(url, content=b"{}", headers={"apikey": API_KEY}).status_code == 401,
        20,
        "an explicit allow_empty spec to be applied",
    )
    assert stack.metric("meshserve_gateway_spec_reload_refused") == 0
