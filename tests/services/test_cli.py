"""The `meshserve` command's manners: --version, help on every option with its default, one parser class."""

from __future__ import annotations

import argparse
import io
import logging
from collections.abc import Iterator

import pytest

from services.cli import build_parser, main


def parsers(parser: argparse.ArgumentParser, path: str = "meshserve") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("meshserve ")


def test_every_option_and_argument_has_help_and_shows_its_default() -> None:
    missing, no_default = [], []
    for path, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not action.help:
                missing.append(f"{path} {name}")
            elif action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                shown = parser.formatter_class(prog="x")._get_help_string(action) or ""
                if "default" not in shown.lower():
                    no_default.append(f"{path} {name}")
    assert not missing, f"options without help text: {missing}"
    assert not no_default, f"defaults not shown: {no_default}"


def test_help_renders_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for path, parser in parsers(build_parser()):
        parser.print_help()
        assert path.split()[-1] in capsys.readouterr().out


def test_canary_set_accepts_spec_after_the_op_as_well_as_before() -> None:
    parse = build_parser().parse_args
    assert parse(["canary", "set", "--spec", "x.yaml", "digits", "v2=10"]).spec == "x.yaml"
    assert parse(["canary", "--spec", "x.yaml", "set", "digits", "v2=10"]).spec == "x.yaml"
    assert parse(["canary", "set", "digits", "v2=10"]).spec is None  # resolved from the project later


@pytest.mark.parametrize(("setting", "tty", "expected"), [("auto", True, "text"), ("auto", False, "json"),
                                                          ("json", True, "json"), ("text", False, "text")])  # fmt: skip
def test_console_logs_are_text_on_a_terminal_and_json_otherwise(setting: str, tty: bool, expected: str) -> None:
    from services.common.telemetry import log_format

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert log_format(Stream(), {"MESHSERVE_LOG_FORMAT": setting}) == expected


def test_a_bad_log_format_is_named() -> None:
    from services.common.telemetry import log_format

    with pytest.raises(ValueError, match="MESHSERVE_LOG_FORMAT='yaml': one of auto, json, text"):
        log_format(io.StringIO(), {"MESHSERVE_LOG_FORMAT": "yaml"})


def test_text_logs_are_one_short_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from services.common.telemetry import configure_logging

    monkeypatch.setenv("MESHSERVE_LOG_FORMAT", "text")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("digits-v1")
        logging.getLogger("meshserve.test").warning("model %s loaded", "digits")
        line = capsys.readouterr().err.strip()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert line.endswith("WARNING meshserve.test: model digits loaded") and not line.startswith("{")
