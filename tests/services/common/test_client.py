"""The shared client against real upstream processes: retries, timeouts, pool limits, propagation, discovery."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.spec import Resilience
from services.common.client import (
    Client,
    NoHealthyUpstream,
    PendingOverflow,
    QueryOfDeath,
    UpstreamConnectError,
    UpstreamTimeout,
    add_header_injector,
    bind_request_headers,
)
from services.discovery import Endpoint
from services.discovery.static import StaticDiscovery, write_table
from tests.services.gateway.stack import Proc, start_echo
from tests.services.modelserver.serverproc import free_port, wait_for


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def retried(self, service: str) -> None:
        self.seen.append(("retried", service))

    def ejected(self, service: str, instance: str) -> None:
        self.seen.append(("ejected", service, instance))

    def readmitted(self, service: str, instance: str) -> None:
        self.seen.append(("readmitted", service, instance))

    def rejected(self, service: str, reason: str) -> None:
        self.seen.append(("rejected", service, reason))

    def retry_skipped(self, service: str, reason: str) -> None:
        self.seen.append(("retry_skipped", service, reason))


@pytest.fixture(scope="module")
def echoes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    root = tmp_path_factory.mktemp("client")
    procs = {"good": start_echo(root, "good"), "broken": start_echo(root, "broken", status=503)}
    yield procs
    for proc in procs.values():
        proc.stop()


def discovery(tmp_path: Path, table: dict[str, list[tuple[str, int]]]) -> StaticDiscovery:
    path = tmp_path / "endpoints.json"
    write_table(path, {s: [Endpoint(s, n, "127.0.0.1", p) for n, p in eps] for s, eps in table.items()})
    return StaticDiscovery(path)


def policy(**overrides: object) -> Resilience:
    data = {
        "timeout": "2s",
        "retries": {"attempts": 2, "per_try_timeout": "1s", "retry_on": ["connect-failure", "refused-stream", "5xx"]},
        "outlier_detection": {"consecutive_5xx_errors": 3, "interval": "1s", "base_ejection_time": "30s",
                              "max_ejection_percent": 50},
        "connection_pool": {"max_connections": 8, "max_pending_requests": 8},
    }  # fmt: skip
    data.update(overrides)
    return Resilience.model_validate(data)


def run(coro):
    return asyncio.run(coro)


def test_5xx_is_retried_on_another_endpoint_and_the_broken_one_ejected(echoes: dict, tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-good", echoes["good"].port), ("svc-broken", echoes["broken"].port)]})
    events = Events()

    async def main() -> list[tuple[int, str]]:
        async with Client(found, events=events) as client:
            replies = [await client.request("svc", "GET", "/echo", resilience=policy()) for _ in range(40)]
            return [(r.status, r.instance) for r in replies]

    assert Counter(run(main())) == {(200, "svc-good"): 40}
    assert ("ejected", "svc", "svc-broken") in events.seen
    assert ("retried", "svc") in events.seen


def test_connect_failure_is_retried_elsewhere(echoes: dict, tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-dead", free_port()), ("svc-good", echoes["good"].port)]})

    async def main() -> Counter:
        async with Client(found) as client:
            return Counter(
                [(await client.request("svc", "GET", "/echo", resilience=policy())).status for _ in range(20)]
            )

    assert run(main()) == {200: 20}


def test_without_a_matching_retry_on_the_5xx_is_returned(echoes: dict, tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-broken", echoes["broken"].port)]})
    events = Events()
    strict = policy(retries={"attempts": 2, "retry_on": ["connect-failure"]})

    async def main() -> int:
        async with Client(found, events=events) as client:
            return (await client.request("svc", "GET", "/echo", resilience=strict)).status

    assert run(main()) == 503
    assert ("retried", "svc") not in events.seen


def test_an_ejected_only_endpoint_is_still_tried_panic_mode(tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-dead", free_port())]})

    async def main() -> list[type]:
        raised = []
        async with Client(found) as client:
            for _ in range(3):
                with pytest.raises((UpstreamConnectError, NoHealthyUpstream)) as info:
                    await client.request("svc", "GET", "/echo", resilience=policy())
                raised.append(type(info.value))
        return raised

    # 3 tries per request on the one host; the third failure in a row ejects it (1 of 1 may go), and
    # yet it is tried again (Envoy's panic mode): a route never has no host while a host exists, so
    # the outage ends when the host is back, not when its ejection time is over.
    assert run(main()) == [UpstreamConnectError, UpstreamConnectError, UpstreamConnectError]
    assert NoHealthyUpstream("svc", "x").status == 503 and NoHealthyUpstream.retry_after == 1


def test_unknown_service_has_no_healthy_upstream(tmp_path: Path) -> None:
    async def main() -> None:
        async with Client(discovery(tmp_path, {})) as client:
            await client.request("nobody", "GET", "/echo", resilience=policy())

    with pytest.raises(NoHealthyUpstream):
        run(main())


class Unanswering:
    """A loopback upstream that reads each request and never answers it; records, per connection,
    the request's arrival and whether the client hung up (a per-try timeout cutting that try)."""

    def __init__(self) -> None:
        self.requests = 0
        self.hung_up = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        await reader.read()  # b"" once the client closes: only the client's timeout ends this try
        self.hung_up += 1
        writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


def test_per_try_and_overall_timeouts_bound_the_request(tmp_path: Path) -> None:
    # 6 tries of 250 ms would take 1.5 s: the 700 ms overall timeout allows 250 + 250 + the last 200.
    slow = policy(timeout="700ms", retries={"attempts": 5, "per_try_timeout": "250ms", "retry_on": ["5xx"]})
    events = Events()
    hosts = [Unanswering(), Unanswering()]

    async def main() -> UpstreamTimeout:
        ports = [await host.start() for host in hosts]
        found = discovery(tmp_path, {"svc": [("svc-a", ports[0]), ("svc-b", ports[1])]})
        async with Client(found, events=events) as client:
            with pytest.raises(UpstreamTimeout) as info:
                await client.request("svc", "GET", "/never", resilience=slow)
            for _ in range(100):  # let the servers see the last hang-up (bounded, no timing)
                if sum(h.hung_up for h in hosts) == sum(h.requests for h in hosts):
                    break
                await asyncio.sleep(0.01)
        for host in hosts:
            host.close()
        return info.value

    raised = run(main())
    assert raised.status == 504
    tries = [host.requests for host in hosts]
    assert sum(tries) == 3, tries  # the overall timeout ended the retries, not the 6 tries allowed
    assert min(tries) >= 1, tries  # the retry went to the other endpoint
    assert [host.hung_up for host in hosts] == tries  # every try was cut by the client, none answered
    assert events.seen.count(("retried", "svc")) == 2


def test_more_than_max_pending_fails_fast(echoes: dict, tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-good", echoes["good"].port)]})
    small = policy(connection_pool={"max_connections": 1, "max_pending_requests": 1})
    events = Events()

    async def main() -> Counter:
        async with Client(found, events=events) as client:

            async def one() -> str:
                try:
                    reply = await client.request("svc", "GET", "/sleep/300", resilience=small)
                    return str(reply.status)
                except PendingOverflow:
                    return "overflow"

            outcomes = await asyncio.gather(*(one() for _ in range(6)))
            after = await client.request("svc", "GET", "/echo", resilience=small)
            return Counter([*outcomes, f"after {after.status}"])

    assert run(main()) == {"200": 2, "overflow": 4, "after 200": 1}
    assert events.seen.count(("rejected", "svc", "pending_overflow")) == 4


def test_request_id_and_trace_headers_are_propagated(echoes: dict, tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-good", echoes["good"].port)]})
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def inject(headers: dict) -> None:
        headers["x-injected"] = "yes"

    async def main() -> dict:
        bind_request_headers({"x-request-id": "rid-7", "traceparent": traceparent, "apikey": "never-propagated"})
        add_header_injector(inject)
        async with Client(found) as client:
            explicit = await client.request(
                "svc", "GET", "/echo", resilience=policy(), headers={"x-request-id": "explicit"}
            )
            implicit = await client.request("svc", "POST", "/echo", resilience=policy(), body=b"12345")
            return {"explicit": explicit.json(), "implicit": implicit.json()}

    seen = run(main())
    assert seen["implicit"]["headers"]["x-request-id"] == "rid-7"
    assert seen["implicit"]["headers"]["traceparent"] == traceparent
    assert seen["implicit"]["headers"]["x-injected"] == "yes"
    assert "apikey" not in seen["implicit"]["headers"]
    assert seen["implicit"]["body_bytes"] == 5
    assert seen["explicit"]["headers"]["x-request-id"] == "explicit"  # the caller's value wins


def test_endpoints_follow_discovery_changes(echoes: dict, tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-good", echoes["good"].port)]})

    async def main() -> list[str]:
        async with Client(found, refresh_interval=0.05) as client:
            first = await client.request("svc", "GET", "/echo", resilience=policy())
            write_table(found.path, {"svc": [Endpoint("svc", "svc-moved", "127.0.0.1", echoes["good"].port)]})
            deadline = time.monotonic() + 10
            while True:
                reply = await client.request("svc", "GET", "/echo", resilience=policy())
                if reply.instance == "svc-moved" or time.monotonic() > deadline:
                    return [first.instance, reply.instance]
                await asyncio.sleep(0.05)

    assert run(main()) == ["svc-good", "svc-moved"]


@pytest.mark.parametrize("path", ["/shed", "/dependency"])
def test_load_shed_and_dependency_failures_never_eject_the_host(echoes: dict, tmp_path: Path, path: str) -> None:
    """A 503 + Retry-After (queue full, draining) or a 5xx naming a failed dependency is not the host's fault."""
    found = discovery(tmp_path, {"svc": [("svc-good", echoes["good"].port)]})
    events = Events()

    async def main() -> Counter:
        async with Client(found, events=events) as client:
            replies = [await client.request("svc", "GET", path, resilience=policy()) for _ in range(10)]
            replies.append(await client.request("svc", "GET", "/status/503", resilience=policy()))
            return Counter(r.status for r in replies)

    assert run(main()) == {503: 11}
    # 30 answers of the neutral kind left the counter at 0; the plain 503's three tries eject.
    assert [e for e in events.seen if e[0] == "ejected"] == [("ejected", "svc", "svc-good")]


def test_retry_budget_bounds_retries_to_a_share_of_active_requests(echoes: dict, tmp_path: Path) -> None:
    found = discovery(tmp_path, {"svc": [("svc-broken", echoes["broken"].port)]})
    events = Events()
    budget = policy(
        retries={"attempts": 2, "retry_on": ["5xx"], "budget_percent": 20, "min_retry_concurrency": 1},
        outlier_detection={"consecutive_5xx_errors": 0},
        connection_pool={"max_connections": 64, "max_pending_requests": 64},
    )

    async def main() -> Counter:
        async with Client(found, events=events) as client:
            calls = [client.request("svc", "GET", "/sleep/50", resilience=budget) for _ in range(50)]
            return Counter(r.status for r in await asyncio.gather(*calls))

    assert run(main()) == {503: 50}
    retried = events.seen.count(("retried", "svc"))
    assert ("retry_skipped", "svc", "retry_budget") in events.seen
    assert retried < 50 * 2 / 2, f"{retried} retries for 50 requests: the budget did not bound them"


def test_a_query_of_death_resets_two_hosts_at_most_and_is_refused_after(tmp_path: Path) -> None:
    """Three replicas that die on a marker body: the request kills two and is refused, not sent to a third;
    the same body is then refused without a try; an innocent request is served by the survivor."""
    crashers = [start_echo(tmp_path, f"c{i}", env={"ECHO_CRASH_MARKER": "POISON"}) for i in range(3)]
    try:
        found = discovery(tmp_path, {"svc": [(f"svc-{i}", p.port) for i, p in enumerate(crashers)]})
        events = Events()
        lenient = policy(outlier_detection={"consecutive_5xx_errors": 0})

        async def main() -> tuple[list[str], int]:
            async with Client(found, events=events) as client:
                refused = []
                for _ in range(2):
                    with pytest.raises(QueryOfDeath) as info:
                        await client.request("svc", "POST", "/echo", resilience=lenient, body=b"xx POISON xx")
                    refused.append(str(info.value))
                innocent = await client.request("svc", "POST", "/echo", resilience=lenient, body=b"fine")
                return refused, innocent.status

        refused, innocent = run(main())
        assert "reset the connection of 2 hosts" in refused[0] and "query of death" in refused[0]
        assert innocent == 200
        # the exits complete just after the resets: wait for two, then the third must still be alive
        wait_for(lambda: sum(p.proc.poll() is not None for p in crashers) >= 2, 10, "two replicas to exit")
        assert sum(p.proc.poll() is None for p in crashers) == 1
        assert events.seen.count(("rejected", "svc", "query_of_death")) == 2
        assert QueryOfDeath.status == 502
    finally:
        for proc in crashers:
            proc.stop()
