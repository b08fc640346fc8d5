"""The INT8 benchmark's report: the committed Markdown is what `render` makes of the committed JSON (the
figures in the README come from a real run, not an edit), and the CPU flags are read from /proc/cpuinfo."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.bench.int8 import INT8_FLAGS, cpu_flags, render

RESULTS = Path(__file__).resolve().parents[3] / "loadtests" / "bench" / "results"


def test_the_committed_table_is_rendered_from_the_committed_figures() -> None:
    data = json.loads((RESULTS / "int8.json").read_text())
    assert (RESULTS / "int8.md").read_text() == render(data)
    assert [m["model"] for m in data["models"]] == ["digits", "resnet"]
    for model in data["models"]:
        assert model["method"] == "static" and model["int8"]["size_bytes"] < model["fp32"]["size_bytes"] / 2
        assert model["fp32"]["latency_b1_ms"] > 0 and model["int8"]["latency_b1_ms"] > 0
    assert set(data["cpu_int8_flags"]) == set(INT8_FLAGS)


def test_cpu_flags_name_every_int8_relevant_flag() -> None:
    flags = cpu_flags()
    assert set(flags) in (set(INT8_FLAGS), set())  # empty only where /proc/cpuinfo has no flags line
