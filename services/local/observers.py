"""The processes `meshserve up` adds beside the services: the local Prometheus and the console.

They live here, at the top, because the supervisor owns process plans and ports: observability/ only
knows how to run Prometheus and draw panels, never who starts it (layers import downward only).
Each hook takes the stack and returns its process plans; nothing when Prometheus's binary is missing
(the console would have nothing to draw).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from observability import console, prometheus
from services.local.plan import ProcessSpec
from services.local.supervisor import LocalStack, free_port


def prometheus_processes(stack: LocalStack) -> list[ProcessSpec]:
    """Prometheus scraping the stack, when the binary exists."""
    binary = prometheus.find_binary()
    if binary is None:
        return []
    port = free_port()
    interval = stack.env.get(prometheus.SCRAPE_INTERVAL_ENV, prometheus.DEFAULT_SCRAPE_INTERVAL)
    argv = (
        sys.executable, "-m", "observability.prometheus",
        "--run-dir", str(stack.run_dir), "--spec", str(stack.spec_path),
        "--port", str(port), "--scrape-interval", interval, "--binary", binary,
    )  # fmt: skip
    return [ProcessSpec(prometheus.SERVICE, f"{prometheus.SERVICE}-0", argv, port, "/-/ready", discoverable=False)]


def console_processes(stack: LocalStack) -> list[ProcessSpec]:
    """The console, reading the stack's spec and its Prometheus's URL file; nothing without Prometheus."""
    if prometheus.find_binary() is None:
        return []
    port = free_port()
    argv = (
        sys.executable, "-m", "observability.console",
        "--run-dir", str(stack.run_dir), "--spec", str(stack.spec_path), "--port", str(port),
        "--scrape-interval", stack.env.get(prometheus.SCRAPE_INTERVAL_ENV, prometheus.DEFAULT_SCRAPE_INTERVAL),
    )  # fmt: skip
    return [ProcessSpec(console.SERVICE, f"{console.SERVICE}-0", argv, port, "/healthz", discoverable=False)]


# What `up` adds, in start order; one line per new observer.
HOOKS: tuple[Callable[[LocalStack], list[ProcessSpec]], ...] = (prometheus_processes, console_processes)
