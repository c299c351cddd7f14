"""The one measure record: a scalar that says something about a minimum or a path, with its
confidence interval and the direction in which it means *sharper* (or worse connected).

Every measure (path metrics, flatness, the seeds' spread, the Hessian's trace, the sharpness
values a comparison reads) is a :class:`Measure` in code. On disk and in W&B it is the JSON form
``{"value", "ci_low", "ci_high", "higher_is_sharper"}`` under ``summary["measures"]`` and the
files' ``measures`` attribute (:meth:`Measure.to_json`); the surface tasks' ``sharpness/<name>``
summary keys, older than the record, are bare values that :func:`from_json` reads as measures
without an interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _opt(v: Any) -> float | None:
    """A finite-or-not float, or None for a missing or non-numeric value."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Measure:
    """``value`` with its interval (None where the measure has none); ``higher_is_sharper``: True
    when a larger value means a sharper minimum or a worse-connected path, False for the opposite,
    None where the measure has no such direction (a location, a base loss)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    higher_is_sharper: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        for k in ("ci_low", "ci_high"):
            v = getattr(self, k)
            object.__setattr__(self, k, None if v is None else float(v))

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "higher_is_sharper": self.higher_is_sharper}

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


def from_json(entry: Any) -> Measure | None:
    """A measure from its JSON form or a bare number; None for anything else."""
    if isinstance(entry, Measure):
        return entry
    if isinstance(entry, Mapping) and "value" in entry:
        value = _opt(entry["value"])
        hs = entry.get("higher_is_sharper")
        return Measure(math.nan if value is None else value, _opt(entry.get("ci_low")), _opt(entry.get("ci_high")),
                       hs if isinstance(hs, bool) else None)
    value = _opt(entry)
    return None if value is None else Measure(value)


def measures_json(measures: Mapping[str, Measure]) -> dict[str, dict[str, Any]]:
    """``{name: measure.to_json()}``: the form summaries, files and W&B carry."""
    return {name: m.to_json() for name, m in measures.items()}


def measures_from_json(raw: Any) -> dict[str, Measure]:
    """The readable entries of a stored ``measures`` mapping (others are left out)."""
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for name, entry in raw.items():
        m = from_json(entry)
        if m is not None:
            out[str(name)] = m
    return out
