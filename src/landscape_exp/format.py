"""How quantities are written for people (durations in plans, progress and cost lines)."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``42 s``, ``7.5 min``, ``6.4 h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
