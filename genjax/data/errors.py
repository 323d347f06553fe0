"""The one error a data source raises for a user mistake, as a single printable line."""

from __future__ import annotations

import re

from genjax.config import ConfigError


def one_line(text: str) -> str:
    """Joins the lines of a message (e.g. a library's exception text) so CLIs print one line."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def data_error(spec: str, problem: str) -> ConfigError:
    """A ConfigError "data source SPEC: PROBLEM", where PROBLEM also says what would be valid."""
    return ConfigError(one_line(f"data source {spec!r}: {problem}"))
