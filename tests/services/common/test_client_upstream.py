"""Outlier detection (Envoy semantics), least-request picking and retry conditions: the pure parts."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from mesh.spec import OutlierDetection
from services.common.client import should_retry
from services.common.upstream import HostPool


@dataclass
class Ep:
    instance: str
    host: str
    port: int


def pool(n: int, **policy: object) -> tuple[HostPool, list[str]]:
    events: list[str] = []
    hosts = HostPool(
        OutlierDetection(
            **{
                "consecutive_5xx_errors": 3,
                "interval": 10,
                "base_ejection_time": 30,
                "max_ejection_percent": 100,
                **policy,
            }
        ),
        on_eject=lambda h: events.append(f"eject {h.instance}"),
        on_readmit=lambda h: events.append(f"readmit {h.instance}"),
        rng=random.Random(1),
    )
    hosts.update([Ep(f"e{i}", "127.0.0.1", 9000 + i) for i in range(n)])
    return hosts, events


def fail(hosts: HostPool, index: int, times: int, now: float) -> bool:
    return [hosts.record(hosts.hosts[index], True, now) for _ in range(times)][-1]


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    hosts, events = pool(2)
    fail(hosts, 0, 2, 1.0)
    hosts.record(hosts.hosts[0], False, 1.0)  # a success between failures resets the run
    assert not fail(hosts, 0, 2, 1.0)
    assert fail(hosts, 0, 1, 1.0)
    assert events == ["eject e0"]
    assert {hosts.pick(2.0).instance for _ in range(20)} == {"e1"}


def test_ejection_lasts_base_time_times_ejections_then_readmits() -> None:
    hosts, events = pool(2, interval=1000)
    fail(hosts, 0, 3, 100.0)
    assert hosts.hosts[0].ejected_until == 130.0
    hosts.pick(129.9)
    assert hosts.hosts[0].ejected
    hosts.pick(130.0)
    assert not hosts.hosts[0].ejected and hosts.hosts[0].consecutive_5xx == 0
    fail(hosts, 0, 3, 131.0)  # second ejection: twice as long
    assert hosts.hosts[0].ejected_until == 131.0 + 60
    assert events == ["eject e0", "readmit e0", "eject e0"]


def test_ejection_multiplier_decays_per_healthy_interval() -> None:
    hosts, _ = pool(2, interval=10)
    fail(hosts, 0, 3, 0.5)
    hosts.pick(31.0)  # readmitted at 31
    fail(hosts, 0, 3, 61.0)  # 3 healthy intervals since: multiplier back to 0, so 1 x base
    assert hosts.hosts[0].ejected_until == 61.0 + 30


def test_max_ejection_percent_caps_ejections_but_one_host_may_always_go() -> None:
    hosts, events = pool(2, max_ejection_percent=10)
    assert fail(hosts, 0, 3, 1.0)  # 1 of 2 ejected although 50% > 10%: Envoy ejects at least one
    assert not fail(hosts, 1, 5, 1.0)  # 2 of 2 would be 100%
    assert events == ["eject e0"]
    hosts4, _ = pool(4, max_ejection_percent=50)
    assert fail(hosts4, 0, 3, 1.0)
    assert fail(hosts4, 1, 3, 1.0)  # 2 of 4 = 50%
    assert not fail(hosts4, 2, 3, 1.0)  # 3 of 4 = 75%


def test_zero_consecutive_errors_disables_ejection() -> None:
    hosts, events = pool(1, consecutive_5xx_errors=0)
    assert not fail(hosts, 0, 50, 1.0)
    assert events == [] and hosts.pick(1.0) is not None


def test_every_host_ejected_panics_to_all_hosts_and_only_no_host_picks_none() -> None:
    hosts, _ = pool(1)
    assert fail(hosts, 0, 3, 1.0)
    assert hosts.hosts[0].ejected
    assert hosts.pick(2.0) is hosts.hosts[0]  # the route keeps its only host (Envoy's panic mode)
    empty, _ = pool(0)
    assert empty.pick(0.0) is None


def test_panic_only_when_no_host_is_left_in_rotation() -> None:
    hosts, _ = pool(3)
    assert fail(hosts, 0, 3, 1.0) and fail(hosts, 1, 3, 1.0)
    assert {hosts.pick(2.0).instance for _ in range(50)} == {"e2"}  # one healthy host: ejected ones stay out
    assert fail(hosts, 2, 3, 1.0)
    assert {hosts.pick(2.0).instance for _ in range(200)} == {"e0", "e1", "e2"}


def test_least_request_prefers_the_idle_host() -> None:
    hosts, _ = pool(2)
    hosts.hosts[0].in_flight = 5
    assert Counter(hosts.pick(1.0).instance for _ in range(50)) == {"e1": 50}


def test_power_of_two_choices_spreads_equal_hosts() -> None:
    hosts, _ = pool(4)
    counts = Counter(hosts.pick(1.0).instance for _ in range(4000))
    assert set(counts) == {"e0", "e1", "e2", "e3"}
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_retry_avoids_hosts_already_tried_when_it_can() -> None:
    hosts, _ = pool(3)
    tried = [hosts.hosts[0], hosts.hosts[1]]
    assert {hosts.pick(1.0, tried).instance for _ in range(20)} == {"e2"}
    single, _ = pool(1)
    assert single.pick(1.0, [single.hosts[0]]) is single.hosts[0]


def test_update_keeps_state_of_hosts_still_present() -> None:
    hosts, events = pool(2)
    fail(hosts, 0, 3, 1.0)
    hosts.update([Ep("e0", "127.0.0.1", 9000), Ep("e9", "127.0.0.1", 9009)])
    assert hosts.hosts[0].ejected and hosts.ejected_count == 1
    hosts.update([Ep("e9", "127.0.0.1", 9009)])
    assert hosts.ejected_count == 0
    assert events == ["eject e0", "readmit e0"]  # a removed ejected host stops counting as ejected


@pytest.mark.parametrize(
    ("conditions", "status", "failure", "expected"),
    [
        ({"5xx"}, 500, None, True),
        ({"5xx"}, 404, None, False),
        ({"5xx"}, None, "reset", True),
        ({"5xx"}, None, "timeout", True),
        ({"5xx"}, None, "connect-failure", True),
        ({"gateway-error"}, 500, None, False),
        ({"gateway-error"}, 503, None, True),
        ({"connect-failure"}, None, "connect-failure", True),
        ({"connect-failure"}, 503, None, False),
        ({"connect-failure"}, None, "timeout", False),
        ({"refused-stream"}, None, "reset", True),
        ({"reset"}, None, "reset", True),
        (set(), None, "connect-failure", False),
    ],
)
def test_retry_on_follows_envoy(conditions: set[str], status: int | None, failure: str | None, expected: bool) -> None:
    assert should_retry(frozenset(conditions), status=status, failure=failure) is expected
