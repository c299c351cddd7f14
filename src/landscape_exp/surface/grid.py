"""Grid specifications in the original tool's syntax: ``min:max:num`` (e.g. ``-1:1:51``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landscape_exp.errors import UserError

# Beyond this many points per axis a surface is almost surely a typo (51 is the paper's choice).
MAX_POINTS_PER_AXIS = 100_000


@dataclass(frozen=True)
class Axis:
    """One grid axis: ``num`` points evenly spaced over ``[lo, hi]`` (both ends included)."""

    lo: float
    hi: float
    num: int

    @property
    def coordinates(self) -> np.ndarray:
        # int count: the original tool passed a float to np.linspace and fails on numpy 2.
        return np.linspace(self.lo, self.hi, int(self.num))

    def spec(self) -> str:
        return f"{self.lo:g}:{self.hi:g}:{self.num}"


def parse_axis(spec: object, name: str = "x", *, single: bool = False) -> Axis:
    """Parse ``'min:max:num'``; raise a one-line UserError naming the bad value otherwise.

    ``single``: also accept one value, ``v:v:1`` (the ``y=0:0:1`` of a 1xN grid, which the
    original tool accepted)."""
    text = str(spec).strip()
    parts = text.split(":")
    allowed = f"{name} must look like 'min:max:num' with min < max and num >= 2 (e.g. {name}=-1:1:51)"
    if single:
        allowed += f", or v:v:1 for the single value v (e.g. {name}=0:0:1)"
    if len(parts) != 3:
        raise UserError(f"malformed grid {name}={text!r}: {allowed}")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise UserError(f"malformed grid {name}={text!r}: min and max are not numbers; {allowed}") from None
    try:
        num = int(parts[2])
    except ValueError:
        raise UserError(f"malformed grid {name}={text!r}: num {parts[2]!r} is not an integer; {allowed}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UserError(f"malformed grid {name}={text!r}: min and max must be finite; {allowed}")
    if single and num == 1 and lo == hi:
        return Axis(lo, hi, 1)
    if num < 2:
        raise UserError(f"bad grid {name}={text!r}: num={num} points; {allowed}")
    if num > MAX_POINTS_PER_AXIS:
        raise UserError(f"bad grid {name}={text!r}: num={num} exceeds {MAX_POINTS_PER_AXIS} points per axis")
    if not lo < hi:
        raise UserError(f"bad grid {name}={text!r}: min {lo:g} is not below max {hi:g}; {allowed}")
    return Axis(lo, hi, num)


@dataclass(frozen=True)
class Grid:
    """A 1D or 2D grid. Point ``k`` of a 2D grid is ``(x[k % nx], y[k // nx])``.

    That flat order matches the original tool (``np.meshgrid(x, y)`` raveled), and 2D result
    arrays have shape ``(ny, nx)`` with ``Z[j, i] = f(x[i], y[j])``.
    """

    x: Axis
    y: Axis | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.x.num,) if self.y is None else (self.y.num, self.x.num)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    def point(self, k: int) -> tuple[float, ...]:
        """Coordinates of flat point ``k``."""
        xs = self.x.coordinates
        if self.y is None:
            return (float(xs[k]),)
        j, i = divmod(k, self.x.num)
        return (float(xs[i]), float(self.y.coordinates[j]))

    def points(self) -> np.ndarray:
        """All points in flat order, shape ``(size, ndim)``."""
        if self.y is None:
            return self.x.coordinates[:, None]
        xx, yy = np.meshgrid(self.x.coordinates, self.y.coordinates)
        return np.stack([xx.ravel(), yy.ravel()], axis=1)


def parse_grid(x: object, y: object | None = None, *, single_y: bool = False) -> Grid:
    """Grid from ``x`` and optional ``y`` specs; ``single_y``: ``y`` may be one value (a 1xN grid,
    stored as the original tool did: ``ycoordinates`` of length 1, 2D arrays of one row)."""
    return Grid(parse_axis(x, "x"), None if y is None else parse_axis(y, "y", single=single_y))


def covering_axis(values: np.ndarray, margin: float, num: int, name: str, fallback_span: float | None = None) -> Axis:
    """An axis of ``num`` points covering ``values`` and 0 with ``margin`` of the span on each side,
    its ends rounded outwards to three significant digits of the span (a trajectory's grid)."""
    lo, hi = min(float(np.min(values)), 0.0), max(float(np.max(values)), 0.0)
    span = hi - lo
    if span <= 0:
        span = fallback_span or 1.0
        lo, hi = lo - span / 2, hi + span / 2
    lo, hi = lo - margin * span, hi + margin * span
    step = 10.0 ** (math.floor(math.log10(hi - lo)) - 2)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    return parse_axis(f"{lo:.6g}:{hi:.6g}:{num}", name)


def covering_grid(points: np.ndarray, margin: float, num: int, x: str | None = None, y: str | None = None) -> Grid:
    """``x``/``y`` specs where given; otherwise ``num`` points per axis around ``points`` (n, 2)."""
    xa = parse_axis(x, "x") if x else covering_axis(points[:, 0], margin, num, "x")
    xspan = float(np.ptp(np.append(points[:, 0], 0.0))) or None
    ya = parse_axis(y, "y") if y else covering_axis(points[:, 1], margin, num, "y", fallback_span=xspan)
    return Grid(xa, ya)
