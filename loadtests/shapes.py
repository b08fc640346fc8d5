"""Load shapes (Locust LoadTestShape): step, spike and soak, sized by LOADTEST_USERS,
LOADTEST_DURATION (seconds) and LOADTEST_SPAWN_RATE. The locustfile exposes the one LOADTEST_SHAPE names."""

from __future__ import annotations

import os

from locust import LoadTestShape


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class _Sized(LoadTestShape):
    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self.users = max(1, int(_env_float("LOADTEST_USERS", 10)))
        self.duration = _env_float("LOADTEST_DURATION", 30)
        self.spawn_rate = _env_float("LOADTEST_SPAWN_RATE", max(1.0, self.users))


class StepShape(_Sized):
    """Users climb in LOADTEST_STEPS equal steps over the run (finds the knee of the latency curve)."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed >= self.duration:
            return None
        steps = max(1, int(_env_float("LOADTEST_STEPS", 4)))
        step = min(steps, int(elapsed / (self.duration / steps)) + 1)
        return max(1, round(self.users * step / steps)), self.spawn_rate


class SpikeShape(_Sized):
    """A fifth of the users, then all of them for the middle fifth of the run, then back."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed >= self.duration:
            return None
        base = max(1, self.users // 5)
        spiking = 0.4 * self.duration <= elapsed < 0.6 * self.duration
        return (self.users if spiking else base), max(self.spawn_rate, float(self.users))


class SoakShape(_Sized):
    """All users for the whole run (leaks, drift, slow growth of queues)."""

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() >= self.duration:
            return None
        return self.users, self.spawn_rate


SHAPES: dict[str, type[LoadTestShape]] = {"step": StepShape, "spike": SpikeShape, "soak": SoakShape}
