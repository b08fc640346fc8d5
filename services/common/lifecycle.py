"""Children of the local supervisor follow it out: a SIGKILLed supervisor must not leave servers behind.

Linux's PR_SET_PDEATHSIG is tied to the thread that forked the child, and the supervisor forks from
its monitor thread, so each service watches instead: when the supervisor named in
MESHSERVE_SUPERVISOR_PID is no longer its parent, the service sends itself SIGTERM and drains as
it would for any orderly stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

SUPERVISOR_PID_ENV = "MESHSERVE_SUPERVISOR_PID"
log = logging.getLogger(__name__)


def follow_supervisor(interval: float = 1.0) -> threading.Thread | None:
    """Start the watch when a supervisor started this process; no-op otherwise (tests, pods)."""
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if not expected or not expected.isdigit():
        return None
    supervisor = int(expected)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != supervisor:
                log.warning("supervisor %d is gone: draining and exiting", supervisor)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="follow-supervisor", daemon=True)
    thread.start()
    return thread
