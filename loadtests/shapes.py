"""Locust load shapes for the profiles in loadtests/profiles.py, sized by LOADTEST_USERS,
LOADTEST_DURATION (seconds), LOADTEST_SPAWN_RATE and LOADTEST_STEPS. The locustfile exposes the
one LOADTEST_SHAPE names."""

from __future__ import annotations

import os

from locust import LoadTestShape

from loadtests import profiles


class _ProfileShape(LoadTestShape):
    abstract = True
    profile = "soak"

    def __init__(self) -> None:
        super().__init__()
        self.users = max(1, int(float(os.environ.get("LOADTEST_USERS", 10))))
        self.duration = float(os.environ.get("LOADTEST_DURATION", 30))
        self.spawn_rate = float(os.environ.get("LOADTEST_SPAWN_RATE", max(1, self.users)))
        self.extra = {"steps": int(os.environ.get("LOADTEST_STEPS", 4))} if self.profile == "step" else {}

    def tick(self) -> tuple[int, float] | None:
        users = profiles.PROFILES[self.profile](self.get_run_time(), self.duration, self.users, **self.extra)
        return None if users is None else (users, self.spawn_rate)


class StepShape(_ProfileShape):
    profile = "step"


class SpikeShape(_ProfileShape):
    profile = "spike"


class SoakShape(_ProfileShape):
    profile = "soak"


SHAPES: dict[str, type[LoadTestShape]] = {"step": StepShape, "spike": SpikeShape, "soak": SoakShape}
