"""The ``sharpness`` config group: which sharpness and flatness measures a surface task adds, and
their settings (``conf/sharpness/default.yaml`` documents every key and holds the defaults)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from landscape_exp.config.choices import FLATNESS_METRICS
from landscape_exp.errors import UserError


# ================================================================================================
# Wiring: one call from a surface task, and the surface file's attribute
# ================================================================================================
@dataclass(frozen=True)
class SharpnessSettings:
    """The ``sharpness`` config group; ``conf/sharpness/default.yaml`` documents every field and
    holds the defaults. ``radii`` and ``thresholds`` are stored as tuples of floats.

    A disabled instance (``enabled`` false) is not validated beyond ``enabled``: nothing else of
    it is read (``conf/sharpness/none.yaml`` sets only ``enabled``).
    """

    enabled: bool
    metric: str | None
    radii: tuple[float, ...]
    thresholds: tuple[float, ...]
    model: bool
    eps: float
    rho: float
    eta: float
    steps: int
    restarts: int
    batch_size: int
    max_samples: int | None
    hessian: bool
    hessian_iters: int
    hessian_probes: int
    seed: int
    flatness: FlatnessSettings  # the `flatness` block (read from its mapping here)

    def __post_init__(self) -> None:
        _check_bool("enabled", self.enabled)
        if not self.enabled:
            return
        if self.metric is not None and not (isinstance(self.metric, str) and self.metric):
            raise UserError(f"sharpness.metric={self.metric!r} must be the name of a surface metric "
                            "(e.g. train_loss, test_loss) or null")
        for name in ("radii", "thresholds"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise UserError(f"sharpness.{name}={value!r} must be a list of positive numbers")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
                raise UserError(f"sharpness.{name}={list(value)!r} must be a list of positive numbers")
            object.__setattr__(self, name, tuple(positive_numbers(value, name)))  # frozen: normalise once here
        _check_bool("model", self.model)
        _check_bool("hessian", self.hessian)
        _check_number("eps", self.eps, "a positive number", lambda v: v > 0)
        _check_number("rho", self.rho, "a positive number", lambda v: v > 0)
        _check_number("eta", self.eta, "a number >= 0", lambda v: v >= 0)
        _check_int("steps", self.steps, 0)
        _check_int("restarts", self.restarts, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.max_samples is not None:
            _check_int("max_samples", self.max_samples, 1, " or null (the whole training split)")
        _check_int("hessian_iters", self.hessian_iters, 1)
        _check_int("hessian_probes", self.hessian_probes, 1)
        _check_int("seed", self.seed, None)
        if not isinstance(self.flatness, FlatnessSettings):  # frozen: normalise once here
            object.__setattr__(self, "flatness", FlatnessSettings.from_mapping(self.flatness))

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> SharpnessSettings:
        """Settings from the resolved ``sharpness`` config group. With ``enabled: false`` the other
        keys may be absent; otherwise a missing key is a UserError naming it."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(map(str, d)) - set(names))
        if unknown:
            raise UserError(f"unknown sharpness setting(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        if "enabled" not in d:
            raise UserError("the config has no sharpness.enabled; choose sharpness=default or sharpness=none")
        _check_bool("enabled", d["enabled"])
        if not d["enabled"]:
            return cls(**{n: d.get(n) for n in names})
        missing = [n for n in names if n not in d]
        if missing:
            raise UserError(f"the config has no sharpness.{missing[0]}; it is set in conf/sharpness/default.yaml "
                            f"(missing: {', '.join(missing)})")
        return cls(**{n: d[n] for n in names})


def _check_bool(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise UserError(f"sharpness.{name}={v!r} must be true or false")


def _check_number(name: str, v: Any, what: str, ok: Callable[[float], bool]) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
        raise UserError(f"sharpness.{name}={v!r} must be {what}")


def _check_int(name: str, v: Any, minimum: int | None, alternative: str = "") -> None:
    if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
        what = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        raise UserError(f"sharpness.{name}={v!r} must be {what}{alternative}")


@dataclass(frozen=True)
class FlatnessSettings:
    """``sharpness.flatness`` (conf/sharpness/default.yaml documents each key and holds the defaults)."""

    gaussian: bool
    sigma: float
    mag_sigma: float
    samples: int
    confidence: float
    pac_bayes: bool
    target: float
    metric: str
    pac_bayes_samples: int
    eps: float
    rel_tol: float

    def __post_init__(self) -> None:
        for name in ("gaussian", "pac_bayes"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"sharpness.flatness.{name}={getattr(self, name)!r} must be true or false")
        for name in ("sigma", "mag_sigma", "target", "rel_tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise UserError(f"sharpness.flatness.{name}={v!r} must be a positive number")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not self.eps >= 0:
            raise UserError(f"sharpness.flatness.eps={self.eps!r} must be a number >= 0")
        if not isinstance(self.confidence, (int, float)) or not 0 < self.confidence < 1:
            raise UserError(f"sharpness.flatness.confidence={self.confidence!r} must lie in (0, 1)")
        for name in ("samples", "pac_bayes_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise UserError(f"sharpness.flatness.{name}={v!r} must be an integer >= 2")
        if self.metric not in FLATNESS_METRICS:
            raise UserError(f"sharpness.flatness.metric={self.metric!r} must be one of: {', '.join(FLATNESS_METRICS)}")

    @classmethod
    def from_mapping(cls, d: Any) -> FlatnessSettings:
        names = [f.name for f in fields(cls)]
        if not isinstance(d, Mapping):
            raise UserError(f"sharpness.flatness={d!r} must be a mapping with keys {', '.join(names)}")
        unknown = sorted(set(map(str, d)) - set(names))
        missing = [n for n in names if n not in d]
        if unknown or missing:
            raise UserError(f"sharpness.flatness: unknown {unknown or 'none'}, missing {missing or 'none'}; "
                            f"allowed: {', '.join(names)}")
        return cls(**{n: d[n] for n in names})

    def passes(self, search_steps: int = 12) -> int:
        """Forward passes over the data: 2 (samples + 1) for the Gaussian measures; for PAC-Bayes
        about ``search_steps`` sigmas of ``pac_bayes_samples`` passes, twice (an estimate)."""
        g = 2 * (self.samples + 1) if self.gaussian else 0
        p = 2 * (search_steps * self.pac_bayes_samples + 1) if self.pac_bayes else 0
        return g + p


def positive_numbers(values: Iterable[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    bad = [v for v in out if not (math.isfinite(v) and v > 0)]
    if bad:
        raise UserError(f"sharpness {name} must be positive numbers; got {bad[0]!r}")
    return out
