"""How many users each load shape wants at a moment of the run (pure; loadtests/shapes.py wraps
these in Locust LoadTestShape classes). None ends the run."""

from __future__ import annotations


def step(elapsed: float, duration: float, users: int, steps: int = 4) -> int | None:
    """Users climb in `steps` equal steps over the run (finds the knee of the latency curve)."""
    if elapsed >= duration:
        return None
    steps = max(1, steps)
    current = min(steps, int(elapsed / (duration / steps)) + 1)
    return max(1, round(users * current / steps))


def spike(elapsed: float, duration: float, users: int) -> int | None:
    """A fifth of the users, then all of them for the middle fifth of the run, then back."""
    if elapsed >= duration:
        return None
    return users if 0.4 * duration <= elapsed < 0.6 * duration else max(1, users // 5)


def soak(elapsed: float, duration: float, users: int) -> int | None:
    """All users for the whole run (leaks, drift, slow growth of queues)."""
    return None if elapsed >= duration else users


PROFILES = {"step": step, "spike": spike, "soak": soak}
