"""`up`'s start-up display: a live table on a terminal, one plain line per change otherwise."""

from __future__ import annotations

import io
from pathlib import Path

from services.local.plan import ProcessSpec
from services.local.progress import Progress
from services.local.supervisor import Managed


def managed(instance: str, port: int) -> Managed:
    service = instance.rsplit("-", 1)[0]
    return Managed(ProcessSpec(service, instance, ("true",), port, "/ready"), Path("/dev/null"))


def test_plain_lines_off_a_terminal_say_what_changed_and_how_many_are_ready() -> None:
    out = io.StringIO()
    progress = Progress(2, stream=out)
    a, b = managed("digits-v1-0", 4001), managed("gateway-0", 4002)
    for process, state in ((a, "starting"), (b, "starting"), (a, "ready"), (b, "ready")):
        progress(process, state)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\x1b[" not in out.getvalue()
    assert "digits-v1-0" in lines[2] and " ready " in lines[2] and "port 4001" in lines[2] and "(1/2 ready)" in lines[2]
    assert lines[3].endswith("(2/2 ready)")


def test_a_terminal_gets_one_live_table() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    progress = Progress(2, stream=out)
    assert progress.live
    a, b = managed("digits-v1-0", 4001), managed("gateway-0", 4002)
    progress(a, "starting")
    progress(b, "starting")
    progress(a, "ready")
    progress(b, "ready")
    progress.close()
    shown = out.getvalue()
    assert "meshserve up: 2/2 ready" in shown and "digits-v1-0" in shown and "gateway-0" in shown
    assert "(1/2 ready)" not in shown  # no plain lines: the table is redrawn in place
