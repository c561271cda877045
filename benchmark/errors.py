"""User-facing errors and name suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from a flag, a spec file or a data file.

    The command line prints the message as one line and exits with status 2,
    so the message must name the value, what was expected and what to do.
    """


class DivergedError(RuntimeError):
    """Training produced NaN or infinite values."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def unknown_name(kind: str, name: str, available: Iterable[str]) -> UserError:
    """Build the error for a name that is not registered, with close matches."""
    names = sorted(available)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += f"; did you mean {', '.join(repr(c) for c in close)}?"
    shown = ", ".join(names[:20])
    if len(names) > 20:
        shown += f", ... ({len(names)} in all)"
    message += f"{'' if close else '.'} Available: {shown or 'none'}."
    return UserError(message)
