"""The static backend: the supervisor's endpoints file, re-read when it is replaced."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from services.discovery import Endpoint, from_env
from services.discovery.static import StaticDiscovery, write_table

V1_A = Endpoint("digits-v1", "digits-v1-0", "127.0.0.1", 41001, {"version": "1"})
V1_B = Endpoint("digits-v1", "digits-v1-1", "127.0.0.1", 41002, {"version": "1"})


def _until_equal(read, expected, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while read() != expected:
        assert time.monotonic() < deadline, f"{read()} never became {expected}"
        time.sleep(0.01)


def test_file_format_is_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    StaticDiscovery(path).register(V1_A, "/v2/health/ready")
    assert orjson.loads(path.read_bytes()) == {
        "services": {
            "digits-v1": [{"instance": "digits-v1-0", "host": "127.0.0.1", "port": 41001, "meta": {"version": "1"}}]
        }
    }


def test_reader_reloads_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    writer, reader = StaticDiscovery(path), StaticDiscovery(path)
    assert reader.endpoints("digits-v1") == []
    writer.register(V1_A)
    _until_equal(lambda: reader.endpoints("digits-v1"), [V1_A])
    writer.register(V1_B)
    _until_equal(lambda: reader.endpoints("digits-v1"), [V1_A, V1_B])
    writer.deregister(V1_A)
    _until_equal(lambda: reader.endpoints("digits-v1"), [V1_B])
    write_table(path, {"digits-v2": [Endpoint("digits-v2", "digits-v2-0", "127.0.0.1", 41003)]})
    _until_equal(lambda: [e.instance for e in reader.endpoints("digits-v2")], ["digits-v2-0"])
    assert reader.endpoints("digits-v1") == []


def test_a_broken_file_keeps_the_last_good_table(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    reader = StaticDiscovery(path, check_interval=0)
    write_table(path, {"digits-v1": [V1_A]})
    assert reader.endpoints("digits-v1") == [V1_A]
    path.write_text('{"services": {"digits-v1": [')
    assert reader.endpoints("digits-v1") == [V1_A]


def test_watch_yields_on_change(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    writer, reader = StaticDiscovery(path), StaticDiscovery(path)

    async def scenario() -> list[list[Endpoint]]:
        stream = reader.watch("digits-v1", poll=0.02)
        seen = [await anext(stream)]
        writer.register(V1_A)
        seen.append(await asyncio.wait_for(anext(stream), 3))
        await stream.aclose()
        return seen

    assert asyncio.run(scenario()) == [[], [V1_A]]


def test_from_env(tmp_path: Path) -> None:
    chosen = from_env({"MESHSERVE_DISCOVERY": f"static:{tmp_path}/e.json"})
    assert isinstance(chosen, StaticDiscovery) and chosen.path == tmp_path / "e.json"
    by_run_dir = from_env({"MESHSERVE_RUN_DIR": str(tmp_path)})
    assert isinstance(by_run_dir, StaticDiscovery) and by_run_dir.path == tmp_path / "endpoints.json"
    with pytest.raises(ValueError, match=r"static:/path/to/endpoints\.json or consul:"):
        from_env({"MESHSERVE_DISCOVERY": "etcd:x"})
