"""An optimization path on the contour of its PCA plane (the original ``plot_trajectory.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from landscape_exp.errors import UserError
from landscape_exp.figures.base import contour_lines, masked_note, new_figure, no_points, prepared
from landscape_exp.figures.levels import LevelSpec

if TYPE_CHECKING:
    from landscape_exp.config.sections import PlotSettings

__all__ = ["MAX_LABELS", "contour_vmax", "figure_path_on_contour", "figure_trajectory", "path_labels"]

# At most this many epoch numbers are written next to the path (more would be unreadable).
MAX_LABELS = 12


def figure_path_on_contour(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    path_xy: np.ndarray,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    levels: LevelSpec,
    labels: Sequence[str] | None = None,
    zlabel: str = "loss",
    log: bool = False,
    done: np.ndarray | None = None,
) -> Figure:
    """Contour of a surface with an optimization path on it (the PCA trajectory plot).

    Args:
        x, y, z: the surface, same conventions as :func:`~landscape_exp.figures.surface2d.figure_2d`.
        path_xy: (k, 2) path coordinates in the plane of the surface; rows with a
            non-finite coordinate are skipped.
        title, xlabel, ylabel: text; the axis labels usually carry the explained variance
            (e.g. ``"PC1: 87.3 %"``).
        labels: optional k texts (e.g. epochs) written next to the path points; use ""
            to leave a point unlabelled.
        zlabel: what z is (colour-bar label).
        levels: how the contour levels are chosen (from the data: log-spaced levels keep the
            late epochs near the minimum apart), see :class:`~landscape_exp.figures.levels.LevelSpec`.
        log: contour log10 z.
        done: optional computed-points mask for ``z``.
    """
    xa, ya, zm, label = prepared(x, y, z, done, log, zlabel)
    path = np.asarray(path_xy, dtype=np.float64)
    if path.ndim != 2 or path.shape[1] != 2 or path.shape[0] < 1:
        raise UserError(f"path_xy must have shape (k, 2) with k >= 1; got {path.shape}")
    if labels is not None and len(labels) != path.shape[0]:
        raise UserError(
            f"got {len(labels)} path labels for {path.shape[0]} path points; they must match"
        )
    mask = np.ma.getmaskarray(zm)
    scale = levels.scale(zm, log=log, what=zlabel)
    if scale.warning:
        print(scale.warning)
    ok = np.all(np.isfinite(path), axis=1)
    pts = path[ok]

    fig = new_figure()
    ax = fig.add_subplot()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if mask.all():
        ax.set_title(title, fontsize=10)
        no_points(ax)
    else:
        ax.set_title(title + masked_note(mask), fontsize=10)
        contour_lines(fig, ax, xa, ya, zm, scale, label, avoid=[tuple(p) for p in pts])  # no label on the path

    if pts.size:
        ax.plot(pts[:, 0], pts[:, 1], "-", color="tab:red", marker=".", markersize=5,
                linewidth=1.2, label="path", zorder=4)
        ax.plot(pts[0, 0], pts[0, 1], "o", color="tab:red", markeredgecolor="black",
                markersize=7, label="start", zorder=5)
        ax.plot(pts[-1, 0], pts[-1, 1], "*", color="gold", markeredgecolor="black",
                markersize=14, label="end", zorder=6)
        if labels is not None:
            for (px, py), text in zip(pts, np.asarray(labels, dtype=object)[ok]):
                if str(text):
                    ax.annotate(str(text), (px, py), xytext=(4, 4), textcoords="offset points",
                                fontsize=7, color="tab:red", zorder=7)
        ax.legend(loc="best", fontsize=8)
    return fig


def path_labels(epochs: list[int], coords: np.ndarray, x: np.ndarray, y: np.ndarray, min_gap: float = 0.05) -> list[str]:
    """Epoch labels for the path's points: the first and the last always, others in order while
    they are at least ``min_gap`` (in fractions of the plot's width/height) from every labelled
    point, at most :data:`MAX_LABELS` in all -- late epochs crowd around theta_final."""
    n = len(epochs)
    span = np.array([max(float(np.ptp(x)), 1e-300), max(float(np.ptp(y)), 1e-300)])
    pts = np.asarray(coords, dtype=float)[:, :2] / span
    order = [n - 1, 0] + list(range(1, n - 1))
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= MAX_LABELS or not np.all(np.isfinite(pts[i])):
            continue
        if all(np.abs(pts[i] - pts[j]).max() >= min_gap for j in chosen):
            chosen.append(i)
    return [str(e) if i in chosen else "" for i, e in enumerate(epochs)]


def contour_vmax(z: np.ndarray, done: np.ndarray, vmin: float, vmax: float) -> float:
    """``vmax`` lowered to just above the largest computed value, so that the colour bar shows
    only levels that occur (the default range 0.1..10 dwarfs a path whose loss stays below 3)."""
    v = np.asarray(z, dtype=float)[np.asarray(done, dtype=bool)]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return vmax
    top = float(v.max()) * 1.0001
    return min(vmax, top) if top > vmin else vmax


def figure_trajectory(
    surface: Mapping[str, Any],
    z_key: str,
    path_xy: np.ndarray,
    epochs: Sequence[int],
    plot: PlotSettings,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Figure:
    """The trajectory figure of task=trajectory: ``surface[z_key]`` contoured with the levels of
    ``plot`` (from the data, or fixed with ``vmax`` lowered by :func:`contour_vmax`), the path
    with sparse epoch labels."""
    spec = LevelSpec.from_plot(plot)
    if spec.mode == "fixed":
        vmax = contour_vmax(surface[z_key], surface["done"], spec.vmin, spec.vmax)
        if vmax - spec.vmin >= spec.vlevel:  # else fewer than two levels: keep the configured range
            spec = replace(spec, vmax=vmax)
    return figure_path_on_contour(
        surface["x"], surface["y"], surface[z_key], path_xy, title=title, xlabel=xlabel, ylabel=ylabel,
        labels=path_labels(list(epochs), path_xy, surface["x"], surface["y"]), zlabel=z_key.replace("_", " "),
        levels=spec, log=bool(plot.log), done=surface["done"],
    )
