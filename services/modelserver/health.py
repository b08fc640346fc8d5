"""Whether a serving version still works, from the outcome of its recent executions.

A version is failing when more than FAILURE_SHARE of the last WINDOW executions (batches) ended in a
server-side error (onnxruntime raised something other than InvalidArgument, the client's fault).
Counting against the whole window, a new version needs WINDOW * FAILURE_SHARE + 1 failures before
it is marked: one bad request is not an outage. A failing version gets no unversioned traffic while
another version is healthy, reads not ready (model readiness; server readiness when no version of a
required model is healthy), and is re-probed by the repository poll (its warm-up, or zeros).
"""

from __future__ import annotations

from collections import deque

WINDOW = 20
FAILURE_SHARE = 0.5


class FailureWindow:
    __slots__ = ("failures", "healthy", "limit", "outcomes")

    def __init__(self, window: int = WINDOW, share: float = FAILURE_SHARE) -> None:
        self.outcomes: deque[bool] = deque(maxlen=window)  # True = failed
        self.failures = 0
        self.limit = int(window * share)  # failing above this many failures in the window
        self.healthy = True  # an attribute, not a property: routing reads it on every request

    def record(self, failed: bool) -> None:
        outcomes = self.outcomes
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self.failures -= 1
        outcomes.append(failed)
        if failed:
            self.failures += 1
        self.healthy = self.failures <= self.limit

    def describe(self) -> str:
        return f"{self.failures} of the last {len(self.outcomes)} executions failed"

    def reset(self) -> None:
        self.outcomes.clear()
        self.failures = 0
        self.healthy = True
