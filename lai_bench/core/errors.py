"""Wording shared by every error message: did-you-mean hints and the one line of an error worth showing."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def did_you_mean(name: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest allowed name, or an empty string when none is close."""
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def error_line(error: Any, limit: int = 200) -> str:
    """The line of an error worth reading: a traceback's exception line, otherwise the first line.

    Empty text gives an empty string; lines longer than ``limit`` characters end in "...".
    """
    lines = [line.strip() for line in str(error or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
