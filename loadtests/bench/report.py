"""Pure helpers that turn measured figures into ratios, verdicts and a Markdown table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator rounded to 3 places; 0.0 when the denominator is not positive."""
    return round(numerator / denominator, 3) if denominator > 0 else 0.0


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub Markdown table: `columns` are (key in each row, header); missing keys print as '-'."""
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    lines = [header, rule]
    for row in rows:
        cells = [_cell(row.get(key)) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_results(folder: Path, stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` under `folder`; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path
