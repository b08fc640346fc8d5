"""Policy snapshots and exchanges for the chain's unit tests (no server: each policy alone)."""

from __future__ import annotations

from typing import Any

from mesh.spec import MeshSpec
from services.gateway.exchange import Exchange
from services.gateway.policy import Policy, build_policy
from tests.services.gateway.stack import MODELS, base_spec

KEY, LIMITED = "unit-key", "unit-limited-key"
PIPELINE_ROUTE = "/v1/digits:classify"


def snapshot(hide_credentials: bool = True, **digits: Any) -> Policy:
    """digits v1/v2 (90/10, override header x-model-version), a pipeline route, `demo` and `limited` (5/hour)."""
    spec = base_spec(MODELS, **digits)
    spec["gateway"]["hide_credentials"] = hide_credentials
    spec["pipelines"] = {"digits-classify": {"route": PIPELINE_ROUTE, "stages": [{"name": "p", "model": "digits"}]}}
    return build_policy(MeshSpec.model_validate(spec), {"GW_TEST_KEY": KEY, "GW_TEST_LIMITED_KEY": LIMITED})


def exchange(
    policy: Policy, path: str, headers: dict[str, str] | None = None, *, query: bytes = b"", method: str = "POST"
) -> Exchange:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Exchange.from_asgi(scope, None, policy, 0.0)
