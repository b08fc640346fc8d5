"""Following a changed spec file (services/common/specfollow.py): settle, invalid, guard, apply.

Driven step by step with the clock passed in (`check(now)`), on real files: no sleeping."""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path

from mesh.spec import MeshSpec, load_spec
from services.common.specfollow import Settle, SpecFollower

FULL = """\
name: follow
models: {}
gateway:
  port: 8080
  consumers: [{username: a, api_key: {env: K}}]
"""


class Applied:
    def __init__(self) -> None:
        self.ports: list[int] = []
        self.outcomes: list[str] = []


def follower(path: Path, seen: Applied, settle: float = 0.5, guard=None) -> SpecFollower[int]:
    return SpecFollower(
        path,
        lambda spec: spec.gateway.port,
        seen.ports.append,
        load=functools.partial(load_spec, check_repository=False),
        guard=guard,
        on_outcome=seen.outcomes.append,
        settle=settle,
    )


def write(path: Path, text: str, mtime_ns: int | None = None) -> None:
    path.write_text(text)
    if mtime_ns is not None:  # a distinct identity even where the clock is coarse
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_change_settles_before_it_is_read() -> None:
    settle = Settle(seen=(1, 1, 1), settle=0.5)
    assert not settle.observe((1, 1, 1), 0.0)  # unchanged
    assert not settle.observe((1, 2, 5), 0.0)  # changed: wait
    assert not settle.observe((1, 3, 9), 0.4)  # still being written: wait again, from now
    assert not settle.observe((1, 3, 9), 0.8)
    assert settle.observe((1, 3, 9), 1.0)
    assert not settle.observe((1, 3, 9), 5.0)  # read once
    assert not settle.observe(None, 6.0)  # gone for a moment (replaced): nothing to read


def test_a_half_written_file_is_not_applied_until_it_settles(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    write(path, FULL, 1_000_000_000)
    seen = Applied()
    follow = follower(path, seen)
    assert follow.initial() == 8080
    half = FULL[: FULL.index("8080") + 2]  # "port: 80": still a valid spec, and the wrong one
    assert load_spec(_copy(tmp_path, half), check_repository=False).gateway.port == 80
    write(path, half, 2_000_000_000)
    assert asyncio.run(follow.check(10.0)) is None
    assert asyncio.run(follow.check(10.3)) is None
    write(path, FULL.replace("8080", "9090"), 3_000_000_000)  # the writer finishes
    assert asyncio.run(follow.check(10.6)) is None  # changed again: settle again
    assert asyncio.run(follow.check(11.2)) == "applied"
    assert seen.ports == [9090] and seen.outcomes == ["applied"]


def test_an_invalid_file_keeps_the_old_spec_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    write(path, FULL, 1_000_000_000)
    seen = Applied()
    follow = follower(path, seen, settle=0.0)
    write(path, FULL.replace("port: 8080", "port: eighty"), 2_000_000_000)
    assert asyncio.run(follow.check(1.0)) == "invalid"
    write(path, "models: [unclosed", 3_000_000_000)
    assert asyncio.run(follow.check(2.0)) == "invalid"
    assert seen.ports == [] and seen.outcomes == ["invalid", "invalid"]
    write(path, FULL.replace("8080", "8081"), 4_000_000_000)
    assert asyncio.run(follow.check(3.0)) == "applied" and seen.ports == [8081]


def test_the_guard_refuses_and_the_old_spec_stays(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    write(path, FULL, 1_000_000_000)
    seen = Applied()
    follow = follower(path, seen, settle=0.0, guard=lambda port: "no ports below 8000" if port < 8000 else None)
    write(path, FULL.replace("8080", "80"), 2_000_000_000)
    assert asyncio.run(follow.check(1.0)) == "refused"
    write(path, FULL.replace("8080", "8443"), 3_000_000_000)
    assert asyncio.run(follow.check(2.0)) == "applied"
    assert seen.ports == [8443] and seen.outcomes == ["refused", "applied"]


def test_a_build_that_cannot_serve_the_spec_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    write(path, FULL, 1_000_000_000)
    applied: list[MeshSpec] = []

    def build(spec: MeshSpec) -> MeshSpec:
        if spec.gateway.port == 1:
            raise ValueError("port 1 is not served here")
        return spec

    follow = SpecFollower(
        path, build, applied.append, load=functools.partial(load_spec, check_repository=False), settle=0
    )
    write(path, FULL.replace("8080", "1"), 2_000_000_000)
    assert asyncio.run(follow.check(1.0)) == "invalid" and applied == []


def test_the_background_poll_applies_a_change(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    write(path, FULL, 1_000_000_000)
    seen = Applied()

    async def scenario() -> None:
        follow = SpecFollower(
            path,
            lambda spec: spec.gateway.port,
            seen.ports.append,
            load=functools.partial(load_spec, check_repository=False),
            poll_interval=0.01,
            settle=0.02,
        )
        follow.start()
        write(path, FULL.replace("8080", "7070"), 2_000_000_000)
        deadline = asyncio.get_running_loop().time() + 10
        while not seen.ports and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await follow.stop()

    asyncio.run(scenario())
    assert seen.ports == [7070]


def _copy(tmp_path: Path, text: str) -> Path:
    other = tmp_path / "copy.yaml"
    other.write_text(text)
    return other
