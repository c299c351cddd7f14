"""Contour levels and colour scales of the 2D figures: the paper's fixed ``arange(vmin, vmax,
vlevel)``, or levels from the data (log-spaced when the loss spans a decade), and the linear or
log scale they are drawn on (:class:`LevelSpec`, :class:`Scale`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import MaxNLocator

from landscape_exp.config.choices import LEVEL_MODES
from landscape_exp.errors import UserError, choice_error

# Guard against a typo such as vlevel=1e-6 turning into millions of contour levels.
_MAX_LEVELS = 1000


# auto levels are log-spaced when the (positive) data spans at least this ratio (a decade) ...
_GEOMETRIC_RATIO = 10.0


# ... from no lower than max / _DEEPEST (a loss of 1e-9 at the minimum does not spread the levels
# over ten decades; what lies below is the lowest band).
_DEEPEST = 1e4


# Round mantissas per decade for log-spaced levels, coarsest first.
_LOG_MANTISSAS: tuple[tuple[float, ...], ...] = (
    (1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
    (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0),
)


def finite(value: float, name: str) -> float:
    """``value`` as a float, raising a UserError if it is not a finite number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number; got {value!r}") from None
    if not np.isfinite(out):
        raise UserError(f"{name} must be finite; got {value!r}")
    return out


def contour_levels(vmin: float, vmax: float, vlevel: float, log: bool = False) -> np.ndarray:
    """Contour levels in the units of the plotted quantity.

    Linear: ``np.arange(vmin, vmax, vlevel)``, exactly as the original ``plot_2D.py``.
    Log (the plot shows log10 z): ``vmin``/``vmax`` stay in loss units so the same config
    works with and without ``log``; the levels are the same *number* of levels as the
    linear spec gives, evenly spaced in log10 over [log10 vmin, log10 vmax). (0.1, 10, 0.5)
    thus gives 20 levels 0.1 decade apart.
    """
    lo = finite(vmin, "vmin")
    hi = finite(vmax, "vmax")
    step = finite(vlevel, "vlevel")
    if hi <= lo:
        raise UserError(f"vmax must be greater than vmin; got vmin={lo}, vmax={hi}")
    if step <= 0:
        raise UserError(f"vlevel must be positive; got {step}")
    count = int(np.ceil((hi - lo) / step))
    if count > _MAX_LEVELS:
        raise UserError(
            f"vlevel={step} gives {count} contour levels over [{lo}, {hi}); at most {_MAX_LEVELS} allowed"
        )
    levels = np.arange(lo, hi, step)
    if not log:
        return levels
    if lo <= 0:
        raise UserError(f"vmin must be positive for a log-scale plot; got {lo}")
    return np.linspace(np.log10(lo), np.log10(hi), levels.size, endpoint=False)


def _nice_log_levels(lo: float, hi: float, num: int) -> np.ndarray:
    """Round log-spaced levels (1-2-5 and the like in every decade) from the largest <= ``lo`` to
    the smallest >= ``hi``, the coarsest mantissa set giving at least ``num - 1`` intervals."""
    decades = np.log10(hi / lo)
    mant = next((m for m in _LOG_MANTISSAS if len(m) * decades >= num - 1), _LOG_MANTISSAS[-1])
    exps = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    return _covering(np.array(sorted(float(f"{m * 10.0 ** k:.6g}") for k in exps for m in mant)), lo, hi)


def auto_levels(values: np.ndarray, num: int, *, geometric: bool = True) -> tuple[np.ndarray, bool]:
    """About ``num`` round contour levels covering the finite ``values``; and whether they are
    log-spaced.

    Log-spaced (round values such as 0.01, 0.015, 0.02, 0.03, ... in every decade) when
    ``geometric`` and the values are positive and span at least a decade -- a loss near a
    minimum, or a training path whose late epochs differ by little, gets as many levels near the
    bottom as near the top -- from no lower than max/1e4; otherwise evenly spaced round values
    over [min, max] (matplotlib's ``MaxNLocator``). A constant surface gets levels just around
    its value.
    """
    v = np.asarray(np.ma.filled(values, np.nan), dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise UserError("no finite values to choose contour levels from")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        pad = max(abs(lo) * 1e-3, 1e-9)
        return np.linspace(lo - pad, lo + pad, 3), False
    if geometric and lo > 0 and hi / lo >= _GEOMETRIC_RATIO:
        return _nice_log_levels(max(lo, hi / _DEEPEST), hi, num), True
    levels = MaxNLocator(nbins=num, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return _covering(levels, lo, hi), False


def _covering(cand: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The sorted candidate levels from the largest <= ``lo`` to the smallest >= ``hi`` (all of
    them on a side none lies beyond), up to rounding noise."""
    tol = 1e-9 * (hi - lo)
    below, above = cand[cand <= lo + tol], cand[cand >= hi - tol]
    start = below[-1] if below.size else cand[0]
    stop = above[0] if above.size else cand[-1]
    return cand[(cand >= start) & (cand <= stop)]


@dataclass(frozen=True)
class Scale:
    """The resolved contour levels and colour normalization of one 2D figure; when the data lies
    outside explicitly given levels, the one-line ``warning`` to print and the shorter ``note``
    written on the figure (both None otherwise)."""

    levels: np.ndarray
    norm: Normalize
    warning: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class LevelSpec:
    """How the contour levels and colour range of a 2D figure are chosen (``plot.levels``).

    ``fixed``: the paper's ``arange(vmin, vmax, vlevel)`` (:func:`contour_levels`), colours over
    [vmin, vmax]; ``auto``: about ``num`` levels from the data (:func:`auto_levels`), colours over the
    levels (log-normalized when the levels are log-spaced). ``geometric=False`` keeps auto levels
    evenly spaced (accuracy in percent).
    """

    mode: str
    vmin: float
    vmax: float
    vlevel: float
    num: int
    geometric: bool = True

    def __post_init__(self) -> None:
        if self.mode not in LEVEL_MODES:
            raise choice_error("plot.levels", self.mode, LEVEL_MODES)
        if isinstance(self.num, bool) or not isinstance(self.num, (int, np.integer)) or not 2 <= self.num <= _MAX_LEVELS:
            raise UserError(f"plot.num_levels={self.num!r} must be an integer in 2..{_MAX_LEVELS}")

    @classmethod
    def from_plot(cls, plot: Any) -> LevelSpec:
        """From the ``plot`` settings (:class:`landscape_exp.config.sections.PlotSettings`)."""
        return cls(str(plot.levels), float(plot.vmin), float(plot.vmax), float(plot.vlevel), int(plot.num_levels))

    def for_percent(self) -> LevelSpec:
        """Accuracy in percent: fixed levels 0, 5, ..., 95 (colours over 0..100), or auto levels
        evenly spaced over the data."""
        return replace(self, vmin=0.0, vmax=100.0, vlevel=5.0, geometric=False)

    def scale(self, zm: np.ma.MaskedArray, *, log: bool, what: str) -> Scale:
        """Levels and colour normalization for ``zm`` (already log10'd when ``log``; the fixed
        levels are then in log10 units too, see :func:`contour_levels`)."""
        finite_v = np.ma.compressed(zm)
        finite_v = finite_v[np.isfinite(finite_v)]
        if self.mode == "auto":
            if finite_v.size == 0:  # nothing drawn: any two levels do
                levels, geo = np.array([0.0, 1.0]), False
            else:
                levels, geo = auto_levels(finite_v, self.num, geometric=self.geometric and not log)
            norm = (LogNorm if geo else Normalize)(float(levels[0]), float(levels[-1]))
            return Scale(levels, norm)
        levels = contour_levels(self.vmin, self.vmax, self.vlevel, log)
        top = float(np.log10(self.vmax) if log else self.vmax)
        norm = Normalize(float(levels[0]), top)
        if not finite_v.size:
            return Scale(levels, norm)
        lo, hi = float(finite_v.min()), float(finite_v.max())
        if int(((levels >= lo) & (levels <= hi)).sum()) >= 2:
            return Scale(levels, norm)
        where = f"{what} lies in {'log10 ' if log else ''}[{lo:.4g}, {hi:.4g}], outside the fixed contour levels " \
                f"{levels[0]:.4g}..{levels[-1]:.4g}"
        return Scale(levels, norm, f"warning: {where} (plot.levels=fixed): the figures show almost no contours; "
                                   "plot.levels=auto chooses levels from the data",
                     f"{where}\n(plot.levels=auto: levels from the data)")
