"""When a changed mesh.yaml may replace the policy in force: a pure check on the old and new snapshot.

A spec cut short while it is being written is often still valid (consumers and routes default to
empty), and applied it answers every request 401 or 404. So the gateway waits until the file has
stayed unchanged for `SETTLE_S` (services.common.specfollow), and refuses a reload that would leave no
consumer with a key, or no route at all, while traffic is flowing (a request in the last
`TRAFFIC_WINDOW_S`): the old policy stays, an error is logged and
`meshserve_gateway_spec_reload_refused` is 1. Emptying the gateway on purpose is said in the spec
itself: `gateway.allow_empty: true`.
"""

from __future__ import annotations

from services.common.specfollow import SETTLE_S
from services.gateway.policy import Policy

__all__ = ["SETTLE_S", "TRAFFIC_WINDOW_S", "refusal"]
TRAFFIC_WINDOW_S = 60.0


def refusal(old: Policy, new: Policy, traffic_flowing: bool) -> str | None:
    """Why `new` must not replace `old`, or None when it may."""
    if not traffic_flowing or new.spec.gateway.allow_empty:
        return None
    if old.keys and not new.keys:
        return (
            "the new spec leaves no consumer with an API key (every request would get 401) while traffic is "
            "flowing; set gateway.allow_empty: true to apply it anyway"
        )
    if (old.models or old.pipelines) and not (new.models or new.pipelines):
        return (
            "the new spec has no route (no model, no pipeline) while traffic is flowing; "
            "set gateway.allow_empty: true to apply it anyway"
        )
    return None
