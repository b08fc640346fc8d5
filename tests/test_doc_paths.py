"""Docs point only at files that ship: every `*.md` path cited in code, config or docs is in the repository.

A citation is a path with a folder in it (`services/modelserver/README.md`, `results/modelserver.md`),
resolved from the repository root or, as Markdown links are, from the citing file's folder. Bare file
names (`report.md`) are what the code writes, not citations. An absolute path never ships.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?<![\w./~-])((?:\.\.?/|/|~/)?(?:[\w.-]+/)+[\w.-]+\.md)\b")
SCANNED = re.compile(r"(\.(py|ya?ml|toml|md|cfg|ini|txt|conf|json|sh)|Makefile|Dockerfile[\w.]*)$")

# Outside the repository on purpose: the reference folder beside the clone that tests/upstream.py reads
# (those tests skip without it); it never ships.
OUTSIDE_ALLOWED = {"../shared/upstream/README.md"}


def shipped_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()  # its examples are wrong on purpose
    return [
        ROOT / name
        for name in listed
        if SCANNED.search(name) and not name.startswith("tests/fixtures/") and name != this
    ]


def citations(text: str) -> set[str]:
    return {m.group(1) for m in CITED.finditer(text) if "://" not in text[max(0, m.start() - 12) : m.start()]}


def resolves(cited: str, citing: Path) -> bool:
    if cited.startswith(("/", "~")):
        return False
    for base in (ROOT, citing.parent):
        target = (base / cited).resolve()
        if target.is_relative_to(ROOT) and target.is_file():
            return True
    return False


def test_every_cited_markdown_file_ships() -> None:
    missing = sorted(
        f"{path.relative_to(ROOT)}: {cited}"
        for path in shipped_files()
        if path.is_file()
        for cited in citations(path.read_text(errors="replace"))
        if cited not in OUTSIDE_ALLOWED and not resolves(cited, path)
    )
    assert not missing, f"cited but not in the repository: {missing}"


def test_the_check_sees_a_missing_citation(tmp_path: Path) -> None:
    """The pattern finds the kinds of citation that were wrong before (notes/, /work/notes/)."""
    text = "Service names follow notes/local-stack.md.\n# Contract: /work/notes/model-repository.md\nsee [x](x.md)"
    found = citations(text)
    assert found == {"notes/local-stack.md", "/work/notes/model-repository.md"}
    assert not any(resolves(c, ROOT / "mesh" / "spec.py") for c in found)
    assert resolves("services/modelserver/README.md", ROOT / "mesh" / "spec.py")
    assert resolves("../loadtests/bench/results/int8.md", ROOT / "lifecycle" / "README.md")
