"""The argparse parser every `meshserve` command is built with: defaults shown in every option's help.

Subparsers inherit the class (argparse creates them with `type(parent)`), so a command module's
`add_parser(...)` gets it without asking. A default that says nothing (None, False, an empty list)
is left out, and so is one the help text already states.
"""

from __future__ import annotations

import argparse
from typing import Any


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
