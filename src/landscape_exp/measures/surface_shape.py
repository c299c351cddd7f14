"""Sharpness read off a computed surface around the checkpoint: the loss rise at a radius and the
width (and, in 2D, the area) of the basin below a threshold (:mod:`landscape_exp.measures.sharpness`
defines them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator

from landscape_exp.config.measures import positive_numbers
from landscape_exp.errors import UserError

PREFIX = "sharpness/"


# ================================================================================================
# Surface-based measures
# ================================================================================================
def _axis(c: Any, name: str) -> np.ndarray:
    a = np.asarray(c, dtype=np.float64)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)) or not np.all(np.diff(a) > 0):
        raise UserError(f"{name} coordinates must be a strictly increasing 1-D array of >= 2 finite numbers")
    return a


def _values_1d(x: Any, loss: Any) -> tuple[np.ndarray, np.ndarray]:
    xa = _axis(x, "x")
    v = np.asarray(loss, dtype=np.float64)
    if v.shape != xa.shape:
        raise UserError(f"loss has shape {v.shape}; expected {xa.shape} like the coordinates")
    return xa, v


def centre_value_1d(x: Any, loss: Any) -> float:
    """``f(0)`` by linear interpolation (NaN if 0 is outside the grid)."""
    xa, v = _values_1d(x, loss)
    return float(np.interp(0.0, xa, v)) if xa[0] <= 0.0 <= xa[-1] else math.nan


def loss_rise_at_radii(x: Any, loss: Any, radii: Sequence[float] = (0.1, 0.25, 0.5, 1.0)) -> dict[float, float]:
    """``{r: (f(-r) + f(r))/2 - f(0)}`` on a 1D surface (linear interpolation; NaN off the grid)."""
    xa, v = _values_1d(x, loss)
    c = centre_value_1d(xa, v)
    out = {}
    for r in positive_numbers(radii, "radii"):
        if -r < xa[0] or r > xa[-1]:
            out[r] = math.nan
        else:
            out[r] = float(0.5 * (np.interp(-r, xa, v) + np.interp(r, xa, v)) - c)
    return out


def _first_crossing(dist: np.ndarray, vals: np.ndarray, level: float) -> tuple[float, bool]:
    """Distance along a ray (``dist[0] = 0`` at the centre, increasing) where ``vals`` first
    exceeds ``level``, linearly interpolated; ``(dist[-1], False)`` if it never does.

    A non-finite value counts as above the level; the crossing is then put at the last finite
    point before it (where the loss went is unknown, so the basin is not extended into it).
    """
    above = ~(vals <= level)  # NaN compares False: above
    idx = np.flatnonzero(above)
    if idx.size == 0:
        return float(dist[-1]), False
    k = int(idx[0])
    if k == 0:
        return 0.0, True
    a, b = vals[k - 1], vals[k]
    if not np.isfinite(b) or b == a:
        return float(dist[k - 1]), True
    frac = (level - a) / (b - a)
    return float(dist[k - 1] + frac * (dist[k] - dist[k - 1])), True


def basin_interval(x: Any, loss: Any, threshold: float) -> tuple[float, float, bool]:
    """``(lo, hi, closed)``: the connected interval around 0 where ``f <= f(0) + threshold``.

    The ends are linearly interpolated between grid points; ``closed`` is False when the
    interval reaches an end of the grid (then ``lo``/``hi`` are the grid's ends there).
    """
    xa, v = _values_1d(x, loss)
    (t,) = positive_numbers([threshold], "thresholds")
    c = centre_value_1d(xa, v)
    if not math.isfinite(c):
        return math.nan, math.nan, False
    level = c + t
    right = xa > 0
    left = xa < 0
    r, rc = _first_crossing(np.concatenate([[0.0], xa[right]]), np.concatenate([[c], v[right]]), level)
    l_, lc = _first_crossing(np.concatenate([[0.0], -xa[left][::-1]]), np.concatenate([[c], v[left][::-1]]), level)
    return -l_, r, bool(rc and lc)


def basin_width(x: Any, loss: Any, threshold: float) -> float:
    """Length of :func:`basin_interval` (a lower bound if the basin is open)."""
    lo, hi, _ = basin_interval(x, loss, threshold)
    return hi - lo


def _values_2d(x: Any, y: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xa, ya = _axis(x, "x"), _axis(y, "y")
    za = np.asarray(z, dtype=np.float64)
    if za.shape != (ya.size, xa.size):
        raise UserError(f"2D loss has shape {za.shape}; expected (ny, nx) = {(ya.size, xa.size)}")
    return xa, ya, za


def _bilinear(xa: np.ndarray, ya: np.ndarray, za: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``f(a, b)`` by bilinear interpolation of ``za[j, i] = f(x_i, y_j)``; NaN outside."""
    # inf would turn into NaN in the interpolation weights anyway; make that explicit.
    zf = np.where(np.isfinite(za), za, np.nan)
    interp = RegularGridInterpolator((ya, xa), zf, method="linear", bounds_error=False, fill_value=np.nan)
    return lambda a, b: interp(np.stack([np.asarray(b, float).ravel(), np.asarray(a, float).ravel()], axis=1))


def loss_rise_2d(x: Any, y: Any, z: Any, radii: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
                 n_angles: int = 256) -> dict[float, float]:
    """``{r: mean over the circle of radius r of f - f(0)}`` (bilinear; NaN if the circle leaves the grid)."""
    xa, ya, za = _values_2d(x, y, z)
    f = _bilinear(xa, ya, za)
    c = float(f(np.zeros(1), np.zeros(1))[0])
    ang = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    out = {}
    for r in positive_numbers(radii, "radii"):
        if -r < xa[0] or r > xa[-1] or -r < ya[0] or r > ya[-1]:
            out[r] = math.nan
        else:
            out[r] = float(np.mean(f(r * np.cos(ang), r * np.sin(ang))) - c)
    return out


def basin_radii_2d(x: Any, y: Any, z: Any, threshold: float, n_angles: int = 256,
                   oversample: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(radius, closed)`` per ray: where ``f`` first exceeds ``f(0) + threshold`` along each of
    ``n_angles`` rays from the centre (``closed`` False where the ray reaches the grid edge first).

    Rays are sampled every ``min(dx, dy) / oversample`` with bilinear interpolation.
    """
    xa, ya, za = _values_2d(x, y, z)
    (t,) = positive_numbers([threshold], "thresholds")
    f = _bilinear(xa, ya, za)
    c = float(f(np.zeros(1), np.zeros(1))[0])
    radii = np.full(n_angles, math.nan)
    closed = np.zeros(n_angles, dtype=bool)
    if not math.isfinite(c):
        return radii, closed
    h = min(np.diff(xa).min(), np.diff(ya).min()) / max(int(oversample), 1)
    for k, th in enumerate(np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)):
        ca, sa = math.cos(th), math.sin(th)
        # distance from the centre to the grid's boundary along this ray
        reach = min((xa[-1] if ca > 0 else xa[0]) / ca if abs(ca) > 1e-12 else math.inf,
                    (ya[-1] if sa > 0 else ya[0]) / sa if abs(sa) > 1e-12 else math.inf)
        n = max(int(math.ceil(reach / h)), 1)
        d = np.linspace(0.0, reach, n + 1)
        vals = f(d * ca, d * sa)
        vals[0] = c
        radii[k], closed[k] = _first_crossing(d, vals, c + t)
    return radii, closed


def basin_width_2d(x: Any, y: Any, z: Any, threshold: float, n_angles: int = 256) -> tuple[float, bool]:
    """``(2 * mean ray radius, closed)`` of the basin (a lower bound where it is open)."""
    r, closed = basin_radii_2d(x, y, z, threshold, n_angles)
    return float(2.0 * np.mean(r)), bool(closed.all())


def basin_area_2d(x: Any, y: Any, z: Any, threshold: float, oversample: int = 8) -> tuple[float, bool]:
    """``(area, closed)`` of the connected region of ``{f <= f(0) + threshold}`` holding the centre.

    The surface is resampled ``oversample`` times finer by bilinear interpolation before the
    region is labelled, so a smooth boundary is resolved to a fraction of a grid cell; ``closed``
    is False when the region touches the grid's edge.
    """
    xa, ya, za = _values_2d(x, y, z)
    (t,) = positive_numbers([threshold], "thresholds")
    f = _bilinear(xa, ya, za)
    c = float(f(np.zeros(1), np.zeros(1))[0])
    if not math.isfinite(c):
        return math.nan, False
    k = max(int(oversample), 1)
    fx = np.linspace(xa[0], xa[-1], (xa.size - 1) * k + 1)
    fy = np.linspace(ya[0], ya[-1], (ya.size - 1) * k + 1)
    gx, gy = np.meshgrid(fx, fy)
    inside = (f(gx, gy) <= c + t).reshape(gx.shape)
    labels, _ = ndimage.label(inside)
    j, i = int(np.abs(fy).argmin()), int(np.abs(fx).argmin())
    lab = labels[j, i]
    if lab == 0:
        return 0.0, True
    region = labels == lab
    # each fine sample stands for its cell; samples on the edge for half (corners a quarter)
    wx = np.full(fx.size, fx[1] - fx[0])
    wx[[0, -1]] *= 0.5
    wy = np.full(fy.size, fy[1] - fy[0])
    wy[[0, -1]] *= 0.5
    area = float((region * wy[:, None] * wx[None, :]).sum())
    touches = region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()
    return area, not touches


def _fmt(v: float) -> str:
    return f"{v:g}"


def surface_sharpness(surface: Mapping[str, Any], *, metric: str | None = None,
                      radii: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
                      thresholds: Sequence[float] = (0.1, 1.0)) -> dict[str, float]:
    """Surface-based sharpness of a surface as returned by ``read_surface``.

    Keys: ``sharpness/rise_r<r>``, ``sharpness/width_t<t>``, ``sharpness/basin_open_t<t>`` (1.0
    if the basin reaches the grid's edge: the width is then a lower bound) and, for 2D surfaces,
    ``sharpness/area_t<t>``. ``metric`` None: ``train_loss``, else ``test_loss``. Points not
    computed yet are treated as missing (NaN).
    """
    held = [k for k in surface if k.endswith(("_loss", "_acc"))]
    if metric:
        if metric not in surface:
            raise UserError(f"sharpness.metric={metric!r} is not in the surface; it holds: {', '.join(held)}")
        key = metric
    else:
        key = next((k for k in ("train_loss", "test_loss") if k in surface), None)
        if key is None:
            return {}
    z = np.asarray(surface[key], dtype=np.float64).copy()
    done = surface.get("done")
    if done is not None:
        z[~np.asarray(done, dtype=bool).reshape(z.shape)] = np.nan
    out: dict[str, float] = {}
    if surface.get("y") is not None and len(surface["y"]) == 1:  # a 1xN grid (y=v:v:1) is a 1D slice
        surface, z = {**surface, "y": None}, z.ravel()
    if surface.get("y") is None:
        x = surface["x"]
        out.update({f"{PREFIX}rise_r{_fmt(r)}": v for r, v in loss_rise_at_radii(x, z, radii).items()})
        for t in positive_numbers(thresholds, "thresholds"):
            lo, hi, closed = basin_interval(x, z, t)
            out[f"{PREFIX}width_t{_fmt(t)}"] = hi - lo
            out[f"{PREFIX}basin_open_t{_fmt(t)}"] = 0.0 if closed else 1.0
        return out
    x, y = surface["x"], surface["y"]
    out.update({f"{PREFIX}rise_r{_fmt(r)}": v for r, v in loss_rise_2d(x, y, z, radii).items()})
    for t in positive_numbers(thresholds, "thresholds"):
        width, closed = basin_width_2d(x, y, z, t)
        area, aclosed = basin_area_2d(x, y, z, t)
        out[f"{PREFIX}width_t{_fmt(t)}"] = width
        out[f"{PREFIX}area_t{_fmt(t)}"] = area
        out[f"{PREFIX}basin_open_t{_fmt(t)}"] = 0.0 if (closed and aclosed) else 1.0
    return out
