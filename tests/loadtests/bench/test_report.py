"""Ratios, verdicts and the Markdown table."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.bench.report import markdown_table, ratio, verdict, write_results


def test_ratio_and_verdict() -> None:
    assert ratio(170.0, 200.0) == 0.85
    assert ratio(1.0, 0.0) == 0.0
    assert (verdict(True), verdict(False)) == ("PASS", "MISS")


def test_markdown_table_formats_numbers_and_missing_cells() -> None:
    table = markdown_table([{"a": 12345.67, "b": 0.01234}, {"a": 3}], [("a", "A"), ("b", "B")])
    assert table.splitlines() == ["| A | B |", "| --- | --- |", "| 12,345.7 | 0.0123 |", "| 3 | - |"]


def test_write_results_writes_both_files(tmp_path: Path) -> None:
    json_path, md_path = write_results(tmp_path / "r", "x", {"k": 1}, "# t")
    assert json.loads(json_path.read_text()) == {"k": 1}
    assert md_path.read_text() == "# t\n"
