"""Locust load shapes for the profiles in loadtests/profiles.py, sized by Locust's own options:
--users (the peak), --spawn-rate and --run-time (the shape's length), plus LOADTEST_STEPS for step.
`use_common_options` tells Locust the shape reads them, so it neither ignores them nor warns.
The locustfile exposes the one LOADTEST_SHAPE names."""

from __future__ import annotations

import os

from locust import LoadTestShape

from loadtests import profiles

DEFAULT_USERS, DEFAULT_RUN_TIME_S = 10, 30.0  # locust.conf's, for a run without them


class _ProfileShape(LoadTestShape):
    abstract = True
    use_common_options = True
    profile = "soak"

    def __init__(self) -> None:
        super().__init__()
        self.extra = {"steps": int(os.environ.get("LOADTEST_STEPS", 4))} if self.profile == "step" else {}

    def sizing(self) -> tuple[int, float, float]:
        """(peak users, duration s, spawn rate) from the run's parsed options."""
        options = self.runner.environment.parsed_options if self.runner else None
        users = max(1, int(getattr(options, "num_users", None) or DEFAULT_USERS))
        duration = float(getattr(options, "run_time", None) or DEFAULT_RUN_TIME_S)
        return users, duration, float(getattr(options, "spawn_rate", None) or users)

    def tick(self) -> tuple[int, float] | None:
        peak, duration, spawn_rate = self.sizing()
        users = profiles.PROFILES[self.profile](self.get_run_time(), duration, peak, **self.extra)
        return None if users is None else (users, spawn_rate)


class StepShape(_ProfileShape):
    profile = "step"


class SpikeShape(_ProfileShape):
    profile = "spike"


class SoakShape(_ProfileShape):
    profile = "soak"


SHAPES: dict[str, type[LoadTestShape]] = {"step": StepShape, "spike": SpikeShape, "soak": SoakShape}
