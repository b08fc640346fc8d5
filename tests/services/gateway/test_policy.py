"""The gateway's pure parts: version choice, spec snapshot, rate-limit windows, top-1 agreement."""

from __future__ import annotations

import orjson
import pytest

from mesh.spec import validate_spec
from services.common.errors import ProtocolError
from services.common.routing import RouteError
from services.common.v2wire import split_model_path
from services.gateway.agreement import agreement, top1
from services.gateway.policy import build_policy
from services.gateway.ratelimit import RateLimiter
from tests.services.gateway.stack import MODELS, base_spec


def policy(weights: dict[int, int], **gateway: object):
    data = base_spec(MODELS, traffic={"weights": weights, "mirror": {"version": 2, "percentage": 25}})
    data["gateway"].update(gateway)
    return build_policy(validate_spec(data), {"GW_TEST_KEY": "k1"})


def test_weighted_choice_follows_cumulative_weights() -> None:
    route = policy({1: 90, 2: 10}).models["digits"]
    assert route.weighted(0.0) == 1
    assert route.weighted(0.8999) == 1
    assert route.weighted(0.9) == 2
    assert route.weighted(0.9999) == 2
    draws = [i / 1000 for i in range(1000)]
    assert sum(route.weighted(d) == 2 for d in draws) == 100


def test_zero_weight_versions_are_never_chosen_by_the_split() -> None:
    route = policy({1: 0, 2: 100}).models["digits"]
    assert {route.weighted(i / 100) for i in range(100)} == {2}


def test_path_version_beats_header_beats_split() -> None:
    route = policy({1: 100, 2: 0}).models["digits"]
    assert route.resolve("2", "1", 0.0) == 2
    assert route.resolve(None, "v2", 0.0) == 2
    assert route.resolve(None, None, 0.5) == 1
    with pytest.raises(RouteError) as unknown:
        route.resolve(None, "7", 0.0)
    assert unknown.value.status == 404 and "no version v7" in unknown.value.message
    with pytest.raises(RouteError) as bad:
        route.resolve(None, "two", 0.0)
    assert bad.value.status == 400


def test_policy_snapshot_resolves_keys_from_env_and_mirror() -> None:
    snapshot = policy({1: 90, 2: 10})
    assert snapshot.keys == {"k1": "demo"}  # GW_TEST_LIMITED_KEY unset: that consumer has no key
    assert snapshot.limits == {"demo": {"second": 100000}, "limited": {"hour": 5}}
    route = snapshot.models["digits"]
    assert route.mirror_version == 2 and route.mirror_fraction == 0.25
    assert route.services == {1: "digits-v1", 2: "digits-v2"}
    assert route.header_name == "x-model-version"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/digits/infer", ("digits", None, "infer")),
        ("/v2/models/digits", ("digits", None, "")),
        ("/v2/models/digits/versions/2/infer", ("digits", "2", "infer")),
        ("/v2/models/digits/versions/2", ("digits", "2", "")),
        ("/v2/models/digits/ready", ("digits", None, "ready")),
    ],
)
def test_split_model_path(path: str, expected: tuple) -> None:
    assert split_model_path(path) == expected


# ------------------------------------------------------------------ rate limiting


def test_second_window_refuses_past_the_limit_and_resets_with_the_clock() -> None:
    limiter = RateLimiter()
    verdicts = [limiter.check("c", {"second": 3}, 100.2) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    refused = dict(verdicts[3].headers)
    assert refused[b"x-ratelimit-remaining-second"] == b"0"
    assert refused[b"retry-after"] == b"1"
    assert limiter.check("c", {"second": 3}, 101.0).allowed  # a new second
    assert limiter.check("other", {"second": 3}, 100.5).allowed  # per consumer


def test_every_window_counts_and_the_tightest_drives_ratelimit_headers() -> None:
    limiter = RateLimiter()
    limits = {"second": 10, "minute": 3}
    now = 60 * 1000 + 15.0
    for _ in range(3):
        assert limiter.check("c", limits, now).allowed
    refused = limiter.check("c", limits, now + 1)
    assert not refused.allowed
    headers = dict(refused.headers)
    assert headers[b"x-ratelimit-limit-minute"] == b"3"
    assert headers[b"x-ratelimit-remaining-second"] == b"10"  # a new second, nothing counted in it
    assert headers[b"ratelimit-limit"] == b"3"
    assert headers[b"retry-after"] == b"44"  # the minute window ends at :00
    assert limiter.check("c", limits, 60 * 1001).allowed


def test_refused_requests_do_not_count() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.check("c", {"minute": 1}, 30.0)
    assert dict(limiter.check("c", {"minute": 1}, 59.0).headers)[b"x-ratelimit-remaining-minute"] == b"0"
    assert limiter.check("c", {"minute": 1}, 60.0).allowed


# ------------------------------------------------------------------ top-1 agreement


def json_reply(values: list[list[float]], datatype: str = "FP32") -> bytes:
    flat = [x for row in values for x in row]
    shape = [len(values), len(values[0])]
    return orjson.dumps({"outputs": [{"name": "logits", "datatype": datatype, "shape": shape, "data": flat}]})


def binary_reply(values: list[list[float]]) -> tuple[bytes, str]:
    import numpy as np

    raw = np.asarray(values, dtype="<f4").tobytes()
    head = orjson.dumps(
        {
            "outputs": [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": [len(values), len(values[0])],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    return head + raw, str(len(head))


def test_top1_per_row_from_json_and_binary() -> None:
    rows = [[0.1, 0.9, 0.0], [3.0, 1.0, 2.0]]
    assert top1(json_reply(rows), None).tolist() == [1, 0]
    body, length = binary_reply(rows)
    assert top1(body, length).tolist() == [1, 0]


def test_agreement_counts_rows() -> None:
    a = top1(json_reply([[0, 1], [1, 0], [1, 0]]), None)
    b = top1(json_reply([[0, 1], [0, 1], [1, 0]]), None)
    assert agreement(a, b) == (2, 1)
    assert agreement(a, top1(json_reply([[0, 1]]), None)) == (0, 3)


def test_top1_rejects_what_is_not_an_infer_reply() -> None:
    with pytest.raises(ProtocolError, match="not a v2 infer response: no 'outputs' list"):
        top1(b'{"error": "boom"}', None)
    with pytest.raises(ProtocolError, match="first output has datatype object, not numeric"):
        top1(orjson.dumps({"outputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}), None)
    body, length = binary_reply([[0.1, 0.9]])
    with pytest.raises(ProtocolError, match="binary_data_size 8 runs past the end of the body"):
        top1(body[:-4], length)  # the shared codec's offset walk: once a bare slice that read short
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length 'x' is not an integer"):
        top1(body, "x")
