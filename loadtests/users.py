"""Locust users, one per suite: the business API (PNG in) and direct v2 inference (JSON and binary).

Each response's `x-model-version` is counted (`VERSIONS`) for the canary split check. The API key
comes from MESHSERVE_API_KEY (sent as `x-api-key`); the model from LOADTEST_MODEL (default digits).
"""

from __future__ import annotations

import itertools
import os
from collections import Counter

from locust import constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

from loadtests import payloads, suites

VERSIONS: Counter[str] = Counter()
VERSION_HEADER = "x-model-version"


def _headers(content_type: str) -> dict[str, str]:
    headers = {"content-type": content_type}
    key = os.environ.get("MESHSERVE_API_KEY")
    if key:
        headers["x-api-key"] = key
    return headers


def _pace():
    """LOADTEST_RPS_PER_USER caps each user's rate (open-model-ish); unset = as fast as answered."""
    rate = float(os.environ.get("LOADTEST_RPS_PER_USER", 0))
    return constant_throughput(rate) if rate > 0 else (lambda _user: 0)


class _Suite(FastHttpUser):
    abstract = True
    wait_time = _pace()
    route = ""

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        with self.client.post(self.route, data=body, headers=headers, catch_response=True, name=self.route) as resp:
            version = resp.headers.get(VERSION_HEADER) if resp.headers else None
            if resp.status_code == 200:
                if version:
                    VERSIONS[version.removeprefix("v")] += 1
                resp.success()
            else:
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")


class ClassifyUser(_Suite):
    """POST <pipeline route> with a PNG digit (LOADTEST_ROUTE, default /v1/digits:classify)."""

    route = suites.route("classify")

    def on_start(self) -> None:
        self.bodies = itertools.cycle(payloads.png_bodies())

    @task
    def classify(self) -> None:
        self._post(next(self.bodies), _headers("image/png"))


class InferJsonUser(_Suite):
    route = suites.route("infer-json")

    def on_start(self) -> None:
        self.bodies = itertools.cycle(payloads.infer_json_bodies())

    @task
    def infer(self) -> None:
        self._post(next(self.bodies), _headers("application/json"))


class InferBinaryUser(_Suite):
    route = suites.route("infer-binary")

    def on_start(self) -> None:
        self.bodies = itertools.cycle(payloads.infer_binary_bodies())

    @task
    def infer(self) -> None:
        body, header_length = next(self.bodies)
        headers = _headers("application/octet-stream")
        headers["inference-header-content-length"] = str(header_length)
        self._post(body, headers)


USERS: dict[str, type[FastHttpUser]] = {
    "classify": ClassifyUser,
    "infer-json": InferJsonUser,
    "infer-binary": InferBinaryUser,
}
