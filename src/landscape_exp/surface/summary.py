"""The numbers a surface is summarized by (run summaries, W&B, ``task=compare``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from landscape_exp.surface.grid import Grid
from landscape_exp.surface.store import finite_summary


def centre_index(grid: Grid) -> int:
    """The flat index of the point nearest the origin (the analysed checkpoint)."""
    return int(np.argmin(np.abs(grid.points()).sum(axis=1)))


def summarize(surface: dict[str, Any], grid: Grid) -> dict[str, Any]:
    """Loss/accuracy at the centre (the checkpoint: a=0, b=0), best value and where, non-finite counts."""
    done = surface["done"].ravel()
    centre = centre_index(grid)
    out: dict[str, Any] = {"points": grid.size, "points_done": int(done.sum())}
    for key in [k for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in surface]:
        v = np.asarray(surface[key], dtype=float).ravel()
        out[f"{key}/centre"] = float(v[centre]) if done[centre] else math.nan
        finite = done & np.isfinite(v)
        if finite.any():
            best = (int(np.nanargmin(np.where(finite, v, np.inf))) if key.endswith("loss")
                    else int(np.nanargmax(np.where(finite, v, -np.inf))))
            out[f"{key}/{'min' if key.endswith('loss') else 'max'}"] = float(v[best])
            out[f"{key}/argbest"] = [float(c) for c in grid.point(best)]
        out.update({f"{key}/{k}": n for k, n in finite_summary(v, done).items()})
    return out


def summarize_range(surface: dict[str, Any], grid: Grid, metrics: Sequence[str]) -> dict[str, Any]:
    """Centre, minimum and maximum of each metric over the computed finite points."""
    ok = surface["done"].ravel()
    centre = centre_index(grid)
    out: dict[str, Any] = {"points": grid.size, "points_done": int(ok.sum())}
    for m in metrics:
        v = np.asarray(surface[m], dtype=float).ravel()
        out[f"{m}/centre"] = float(v[centre]) if ok[centre] else math.nan
        fin = ok & np.isfinite(v)
        if fin.any():
            out[f"{m}/min"], out[f"{m}/max"] = float(v[fin].min()), float(v[fin].max())
    return out
