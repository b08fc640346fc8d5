"""Which route a request takes and which upstream answers it: two policies of the gateway's chain.

`RouteMatch` runs first and never refuses: it finds the route by dict lookups only, so that every
answer, refusals included, is counted under a bounded route label (never the raw path), and it picks
the error body's key (`error` on /v2/ paths as the model servers answer, `message` on Kong's routes).
`VersionChoice` runs after key-auth and the rate limit (an unknown route still answers 401 to a
caller without a key, as before): a model route's version by the split, the path or the override
header (services.gateway.protocol.choose_version), or a pipeline's service; 404 for no route.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from services.common.v2wire import MODELS_PREFIX, split_model_path
from services.gateway import protocol
from services.gateway.exchange import Exchange, GatewayError


class NoRoute(GatewayError):
    """No model or pipeline route for the request: 404 naming what exists."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class RouteMatch:
    """Access phase (first): the route, its metric label and the error key; never answers."""

    def access(self, ex: Exchange) -> None:
        path = ex.path
        if path.startswith(MODELS_PREFIX):
            ex.error_key = "error"
            ex.model, ex.path_version, ex.rest = split_model_path(path)
            route = ex.model_route = ex.policy.models.get(ex.model)
            if route is not None:
                ex.route_label = route.route_labels.get(ex.rest, route.route_labels[""])
            return
        if path.startswith("/v2/"):
            ex.error_key = "error"
        pipeline = ex.pipeline = ex.policy.pipelines.get(path)
        if pipeline is not None:
            ex.route_label = path


class VersionChoice:
    """Access phase: the version and upstream service; 400/404/503 (RouteError) or 404 (NoRoute)."""

    def __init__(self, draw: Callable[[], float] = random.random) -> None:
        self.draw = draw

    def access(self, ex: Exchange) -> None:
        route = ex.model_route
        if route is not None:
            header = ex.headers.get(route.header_name)
            version = ex.version = protocol.choose_version(route, ex.path_version, header, ex.rest, self.draw())
            ex.service, ex.resilience = route.services[version], route.resilience
            # answers from here on name the chosen version (an upstream's own x-model-version wins)
            ex.chosen = ((b"x-model-version", str(version).encode()),)
        elif ex.pipeline is not None:
            ex.service, ex.resilience = ex.pipeline.service, ex.pipeline.resilience
        elif ex.model is not None:
            known = ", ".join(sorted(ex.policy.models))
            raise NoRoute(f"unknown model {ex.model!r}; known models: {known}")
        else:
            raise NoRoute("no Route matched with those values")
