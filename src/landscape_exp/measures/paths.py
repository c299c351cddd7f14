"""Connectivity metrics of a 1D path between two models: the straight segment (``interp1d``,
``connect``'s segment), a Bezier curve or a polygonal chain (``connect``).

Plain functions of the path parameter ``t`` and a metric ``v(t)`` sampled on it; the models are at
``t = t0`` and ``t = t1`` (0 and 1 unless given), and only the part of the path between them
counts (``interp1d`` also samples beyond them). See docs/measures.md for the definitions and
references:

* **barrier** (Frankle et al. 2020, arXiv 1912.05671): ``max_t [v(t) - ((1-s) v(t0) + s v(t1))]``
  with ``s = (t - t0)/(t1 - t0)``: the height of the worst point above the straight line between
  the end values, and the ``t`` where it is reached. 0 at the ends, so never negative.
* **mc** (Yang et al. 2021, arXiv 2107.11228): ``mc = (v(t0) + v(t1))/2 - v(t*)`` with
  ``t* = argmax_t |v(t) - (v(t0) + v(t1))/2|``. Signed: negative when the path rises above the
  end points (a barrier), positive when it dips below them.
* **curve statistics** (Garipov et al. 2018, arXiv 1802.10026): max and mean of ``v`` over the
  samples, and the integral over ``t`` (trapezoid rule; the mean value over ``[t0, t1]`` once
  divided by ``t1 - t0``).

Every scalar leaves here as a :class:`~landscape_exp.measures.record.Measure`, which
``summary.json`` carries under ``"measures"`` (read generically by ``task=compare``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.integrate import trapezoid

from landscape_exp.errors import UserError
from landscape_exp.measures.record import Measure


def _between(t: Any, v: Any, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """The samples with ``t0 <= t <= t1``; both ends must be sampled (the models' own values)."""
    ta, va = np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if ta.ndim != 1 or ta.shape != va.shape or ta.size < 2 or not np.all(np.diff(ta) > 0):
        raise UserError(f"a path needs increasing t and one value per t; got t of shape {ta.shape}, values {va.shape}")
    if not t0 < t1:
        raise UserError(f"path end points t0={t0} and t1={t1} must satisfy t0 < t1")
    tol = 1e-9 * max(1.0, abs(t1 - t0))
    inside = (ta >= t0 - tol) & (ta <= t1 + tol)
    tin, vin = ta[inside], va[inside]
    if tin.size < 2 or abs(tin[0] - t0) > tol or abs(tin[-1] - t1) > tol:
        raise UserError(f"the path is not sampled at both models (t={t0:g} and t={t1:g}); "
                        f"use a grid that contains them, e.g. x=-0.5:1.5:401")
    return tin, vin


def barrier(t: Any, v: Any, t0: float = 0.0, t1: float = 1.0) -> tuple[float, float]:
    """``(height, location)``: the largest ``v(t)`` minus the line between ``v(t0)`` and ``v(t1)``,
    over the samples in ``[t0, t1]``, and the ``t`` where it is reached (the first such sample).
    NaN, NaN when a value in the range is not finite."""
    tin, vin = _between(t, v, t0, t1)
    if not np.all(np.isfinite(vin)):
        return math.nan, math.nan
    s = (tin - t0) / (t1 - t0)
    excess = vin - ((1.0 - s) * vin[0] + s * vin[-1])
    k = int(np.argmax(excess))
    return float(excess[k]), float(tin[k])


def mode_connectivity(t: Any, v: Any, t0: float = 0.0, t1: float = 1.0) -> tuple[float, float]:
    """``(mc, t*)``: Yang et al.'s signed mode connectivity and the ``t`` where it is read."""
    tin, vin = _between(t, v, t0, t1)
    if not np.all(np.isfinite(vin)):
        return math.nan, math.nan
    mid = 0.5 * (vin[0] + vin[-1])
    k = int(np.argmax(np.abs(vin - mid)))
    return float(mid - vin[k]), float(tin[k])


def curve_stats(t: Any, v: Any, t0: float = 0.0, t1: float = 1.0) -> dict[str, float]:
    """``{"max", "mean", "integral"}`` of ``v`` over the samples in ``[t0, t1]`` (integral: trapezoid in t)."""
    tin, vin = _between(t, v, t0, t1)
    if not np.all(np.isfinite(vin)):
        return {"max": math.nan, "mean": math.nan, "integral": math.nan}
    return {"max": float(vin.max()), "mean": float(vin.mean()), "integral": float(trapezoid(vin, tin))}


def quantities(metrics: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{train,test}_loss`` as given and ``{train,test}_error`` (percent) from ``*_acc``."""
    out = {}
    for split in ("train", "test"):
        if f"{split}_loss" in metrics:
            out[f"{split}_loss"] = np.asarray(metrics[f"{split}_loss"], dtype=np.float64)
        if f"{split}_acc" in metrics:
            out[f"{split}_error"] = 100.0 - np.asarray(metrics[f"{split}_acc"], dtype=np.float64)
    return out


def path_measures(t: Any, metrics: Mapping[str, Any], *, t0: float = 0.0, t1: float = 1.0,
                  prefix: str = "") -> dict[str, Measure]:
    """Every connectivity measure of one path, for each of train/test loss and error present.

    Names: ``<prefix>barrier_<q>``, ``<prefix>barrier_location_<q>``, ``<prefix>mc_<q>``,
    ``<prefix>curve_{max,mean,integral}_<q>`` for ``q`` in ``train_loss``, ``train_error``,
    ``test_loss``, ``test_error``. Higher barriers and curve values mean a worse-connected path
    (``higher_is_sharper`` True); a higher ``mc`` a better-connected one (False).
    """
    out: dict[str, Measure] = {}
    for q, v in quantities(metrics).items():
        h, loc = barrier(t, v, t0, t1)
        mc, _ = mode_connectivity(t, v, t0, t1)
        st = curve_stats(t, v, t0, t1)
        out[f"{prefix}barrier_{q}"] = Measure(h, higher_is_sharper=True)
        out[f"{prefix}barrier_location_{q}"] = Measure(loc)
        out[f"{prefix}mc_{q}"] = Measure(mc, higher_is_sharper=False)
        for k in ("max", "mean", "integral"):
            out[f"{prefix}curve_{k}_{q}"] = Measure(st[k], higher_is_sharper=True)
    return out


def barrier_annotation(t: Any, v: Any, t0: float = 0.0, t1: float = 1.0) -> dict[str, float] | None:
    """What a figure marks: the end values, the barrier's height and location (None if not finite
    or the path does not hold both models)."""
    try:
        h, loc = barrier(t, v, t0, t1)
        tin, vin = _between(t, v, t0, t1)
    except UserError:
        return None
    if not math.isfinite(h):
        return None
    return {"t0": t0, "t1": t1, "v0": float(vin[0]), "v1": float(vin[-1]), "height": h, "location": loc}


def surface_barrier_annotation(surface: Mapping[str, Any]) -> dict[str, float] | None:
    """:func:`barrier_annotation` of an ``interp1d`` surface's training loss (points not computed
    count as NaN); None for other surfaces."""
    attrs = surface.get("attrs", {})
    y = surface.get("y")
    if str(attrs.get("task", "")) != "interp1d" or "train_loss" not in surface or (y is not None and len(y) != 1):
        return None
    v = np.ravel(surface["train_loss"])
    done = surface.get("done")
    return barrier_annotation(surface["x"], np.where(np.ravel(done).astype(bool), v, np.nan) if done is not None else v)


def surface_path_measures(task: str, surface: Mapping[str, Any]) -> dict[str, Measure]:
    """The connectivity measures of an ``interp1d`` surface (as ``read_surface`` gives it) between
    its two models at alpha = 0 and 1; ``{}`` for other tasks, or (with a printed note) when the
    grid misses a model. Points not computed count as NaN."""
    if task != "interp1d" or surface.get("y") is not None:
        return {}
    done = surface.get("done")
    mask = np.ravel(done).astype(bool) if done is not None else None
    metrics = {k: np.where(mask, np.ravel(surface[k]), np.nan) if mask is not None else np.ravel(surface[k])
               for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in surface}
    try:
        return path_measures(surface["x"], metrics)
    except UserError as e:
        print(f"no connectivity measures: {e}")
        return {}
