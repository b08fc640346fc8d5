"""Suite names and the route each one loads (pure: no Locust import, so tools and tests can use it;
importing Locust monkey-patches the process with gevent)."""

from __future__ import annotations

import os
from collections.abc import Mapping

SUITES = ("classify", "infer-json", "infer-binary")


def route(suite: str, env: Mapping[str, str] = os.environ) -> str:
    """classify: LOADTEST_ROUTE (default /v1/digits:classify); the others /v2/models/<LOADTEST_MODEL>/infer."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {list(SUITES)}")
    if suite == "classify":
        return env.get("LOADTEST_ROUTE", "/v1/digits:classify")
    return f"/v2/models/{env.get('LOADTEST_MODEL', 'digits')}/infer"
