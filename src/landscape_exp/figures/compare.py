"""Figures comparing runs: 1D curves overlaid, and a grid of 2D contours on one colour scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from landscape_exp.errors import UserError
from landscape_exp.figures.base import (
    NO_POINTS_TEXT,
    XLABEL_2D,
    YLABEL_2D,
    LevelSpec,
    log10_masked,
    mask_invalid,
    new_figure,
)

if TYPE_CHECKING:
    from landscape_exp.compare import Run

__all__ = ["figure_contour_grid", "figure_overlay_1d"]


def figure_overlay_1d(runs: Sequence[Run], *, metric: str = "train_loss", labels: Sequence[str] | None = None,
                      log: bool = False, loss_max: float | None = None) -> Figure:
    """The 1D curves of ``runs`` overlaid, one colour per run: ``metric`` solid and the same
    quantity on the other split dashed (left panel); for a loss ``metric``, the accuracies in a
    right panel where the surfaces hold them (train solid, test dashed)."""
    one_d = [r for r in runs if r.surface is not None and r.surface.get("y") is None]
    if not one_d:
        raise UserError("no run has a 1D surface to overlay")
    labels = list(labels) if labels is not None else [r.name for r in one_d]
    split, quantity = metric.split("_", 1)
    other = f"{'test' if split == 'train' else 'train'}_{quantity}"
    if not any(other in r.surface for r in one_d):
        other = None
    is_loss = quantity == "loss"
    has_acc = is_loss and any(k in r.surface for r in one_d for k in ("train_acc", "test_acc"))
    fig = new_figure((11.0, 4.6) if has_acc else (6.4, 4.6))
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    for i, (r, lab) in enumerate(zip(one_d, labels)):
        s, col = r.surface, f"C{i % 10}"
        x = np.asarray(s["x"], dtype=float)
        panels = [(metric, axes[0], "-", lab), (other, axes[0], "--", None)]
        if has_acc:
            panels += [("train_acc", axes[1], "-", None), ("test_acc", axes[1], "--", None)]
        for key, ax, ls, legend in panels:
            if key is None or key not in s:
                continue
            v = mask_invalid(s[key], s.get("done")).filled(np.nan)
            if log and key.endswith("loss"):
                v = np.where(v > 0, v, np.nan)
            ax.plot(x, v, color=col, linestyle=ls, linewidth=1.4, label=legend)
    axes[0].set_xlabel("alpha")
    axes[0].set_ylabel(quantity if is_loss else "accuracy (%)")
    axes[0].set_title(metric.replace("_", " ") + (f" (dashed: {other.replace('_', ' ')})" if other else ""))
    if is_loss and log:
        axes[0].set_yscale("log")
    if is_loss and loss_max is not None and not log:
        axes[0].set_ylim(top=float(loss_max))
    if not is_loss:
        axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=7)
    if has_acc:
        axes[1].set_xlabel("alpha")
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_ylim(0, 100)
        axes[1].set_title("accuracy (solid: train, dashed: test)")
    return fig


def figure_contour_grid(runs: Sequence[Run], *, metric: str = "train_loss", labels: Sequence[str] | None = None,
                        levels: LevelSpec, log: bool = False) -> Figure:
    """One panel per run with a 2D surface: filled contours of ``metric`` on one shared colour
    scale (one set of levels for all panels, chosen by ``levels`` from the values of every run
    pooled, one colour bar), the checkpoint starred at the centre."""
    two_d = [r for r in runs if r.surface is not None and r.surface.get("y") is not None]
    if not two_d:
        raise UserError("no run has a 2D surface for a contour grid")
    labels = list(labels) if labels is not None else [r.name for r in two_d]
    if metric.endswith("_acc"):  # percent: as the single-run figures
        levels, log = levels.for_percent(), False

    def values(r: Run) -> np.ma.MaskedArray:
        z = mask_invalid(r.surface[metric], r.surface.get("done"))
        return log10_masked(z) if log else z

    pooled = np.ma.concatenate([values(r).ravel() for r in two_d if metric in r.surface] or [np.ma.masked_all(1)])
    scale = levels.scale(pooled, log=log, what=metric.replace("_", " "))
    if scale.warning:
        print(scale.warning)
    levels_v, norm = scale.levels, scale.norm
    n = len(two_d)
    ncols = int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    fig = new_figure((3.6 * ncols + 1.2, 3.3 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    mappable = None
    for idx, ax in enumerate(axes.ravel()):
        if idx >= n:
            ax.set_axis_off()
            continue
        r, lab = two_d[idx], labels[idx]
        s = r.surface
        ax.set_title(lab, fontsize=8)
        ax.set_xlabel(XLABEL_2D, fontsize=7)
        ax.set_ylabel(YLABEL_2D, fontsize=7)
        if metric not in s:
            ax.text(0.5, 0.5, f"no {metric}", transform=ax.transAxes, ha="center")
            continue
        z = values(r)
        x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
        if np.ma.getmaskarray(z).all():
            ax.text(0.5, 0.5, NO_POINTS_TEXT, transform=ax.transAxes, ha="center")
            continue
        cs = ax.contourf(x, y, z, levels=levels_v, cmap="viridis", norm=norm, extend="both")
        ax.contour(x, y, z, levels=levels_v, colors="k", linewidths=0.4, alpha=0.5)
        mappable = cs
        if x[0] <= 0 <= x[-1] and y[0] <= 0 <= y[-1]:
            ax.plot([0], [0], marker="*", color="red", markeredgecolor="black", markersize=10, linestyle="none")
        ax.tick_params(labelsize=7)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, label=(f"log10({metric})" if log else metric).replace("_", " "))
    fig.suptitle(f"{metric.replace('_', ' ')}: shared colour scale", fontsize=10)
    return fig
