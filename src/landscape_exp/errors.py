"""User-facing errors: one clear line, no traceback from deep inside a library."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (config, file, path).

    ``run.py`` prints ``error: <message>`` on one line and exits with status 2.
    Messages name the bad value and what is allowed.
    """


def choice_error(kind: str, value: object, allowed: list[str] | tuple[str, ...]) -> UserError:
    """Standard message for a value outside a closed set."""
    return UserError(f"unknown {kind} {value!r}; allowed: {', '.join(sorted(map(str, allowed)))}")
