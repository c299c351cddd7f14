"""2D surfaces: contour, filled contour, heat map and 3D surface (like ``plot_2D.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the "3d" projection)

from landscape_exp.errors import UserError, choice_error
from landscape_exp.figures.base import (
    MASK_GREY,
    NO_POINTS_TEXT,
    XLABEL_2D,
    YLABEL_2D,
    contour_lines,
    draw_anchors,
    level_colorbar,
    masked_note,
    new_figure,
    no_points,
    prepared,
    save,
    with_suffix,
)
from landscape_exp.figures.levels import LevelSpec, finite

__all__ = ["KINDS_2D", "KIND_SUFFIX", "figure_2d", "save_2d"]

KINDS_2D: tuple[str, ...] = ("contour", "contourf", "heatmap", "surface3d")
# File suffix per 2D kind; "3dsurface" is the name the original plot_2D.py used.
KIND_SUFFIX = {
    "contour": "_contour",
    "contourf": "_contourf",
    "heatmap": "_heatmap",
    "surface3d": "_3dsurface",
}


def _anchors(minimizer: tuple[float, float] | None,
             anchors: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    """The points to mark: the unnamed minimizer star, or the named ``anchors`` (validated)."""
    out: dict[str, tuple[float, float]] = {}
    for name, point in (({"": minimizer} if minimizer is not None else {}) | dict(anchors or {})).items():
        try:
            px, py = point
        except (TypeError, ValueError):
            what = "minimizer" if not name else f"anchor {name!r}"
            raise UserError(f"{what} must be a pair (x, y); got {point!r}") from None
        out[name] = (finite(px, f"{name or 'minimizer'} x"), finite(py, f"{name or 'minimizer'} y"))
    return out


def figure_2d(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    title: str,
    levels: LevelSpec,
    zlabel: str = "train loss",
    log: bool = False,
    minimizer: tuple[float, float] | None = (0.0, 0.0),
    anchors: Mapping[str, tuple[float, float]] | None = None,
    done: np.ndarray | None = None,
) -> Figure:
    """Build (without saving) one 2D-surface figure; see :func:`save_2d` for the arguments.

    Exposed so tests and notebooks can inspect the artists (e.g. the contour segments).
    """
    if kind not in KINDS_2D:
        raise choice_error("2D plot kind", kind, KINDS_2D)
    xa, ya, zm, label = prepared(x, y, z, done, log, zlabel)
    marks = _anchors(minimizer, anchors)
    scale = levels.scale(zm, log=log, what=zlabel)
    mask = np.ma.getmaskarray(zm)
    empty = bool(mask.all())

    fig = new_figure()
    if kind == "surface3d":
        # computed_zorder=False: the markers are drawn over the surface, not hidden.
        ax = fig.add_subplot(projection="3d", computed_zorder=False)
    else:
        ax = fig.add_subplot()
    ax.set_title(title + ("" if empty else masked_note(mask)))
    ax.set_xlabel(XLABEL_2D)
    ax.set_ylabel(YLABEL_2D)
    ax.set_xlim(xa.min(), xa.max())
    ax.set_ylim(ya.min(), ya.max())
    if empty:
        if kind == "surface3d":
            ax.set_zlabel(label)
            ax.text2D(0.5, 0.5, NO_POINTS_TEXT, transform=ax.transAxes, ha="center", fontsize=14)
        else:
            no_points(ax)
        return fig

    if kind == "contour":
        contour_lines(fig, ax, xa, ya, zm, scale, label, avoid=list(marks.values()))
    elif kind == "contourf":
        # Holes left by contourf around masked points are not cell-shaped: grey background.
        if mask.any():
            ax.set_facecolor(MASK_GREY)
        # extend="both": values beyond the levels are coloured, not left blank.
        cs = ax.contourf(xa, ya, zm, levels=scale.levels, cmap="viridis", norm=scale.norm, extend="both")
        level_colorbar(fig, cs, ax, label, scale.levels)
    elif kind == "heatmap":
        cmap = mpl.colormaps["viridis"].with_extremes(bad=MASK_GREY)
        # "nearest": one cell centred on each grid point, right for non-uniform grids too,
        # and the origin is at the bottom-left (the original inverted seaborn's y axis).
        mesh = ax.pcolormesh(xa, ya, zm, cmap=cmap, norm=scale.norm, shading="nearest")
        fig.colorbar(mesh, ax=ax, label=label, extend="both")
        ax.set_xlim(*_cell_edges(xa))
        ax.set_ylim(*_cell_edges(ya))
    else:  # surface3d: colour is height, over the data's own range (as the z axis)
        xx, yy = np.meshgrid(xa, ya)
        lo, hi = float(zm.min()), float(zm.max())
        norm = Normalize(lo, hi if hi > lo else lo + 1.0)
        surf = ax.plot_surface(xx, yy, zm.filled(np.nan), cmap="coolwarm", norm=norm, linewidth=0,
                               antialiased=False)
        ax.set_zlabel(label)
        fig.colorbar(surf, ax=ax, shrink=0.6, aspect=12, pad=0.12, label=label)
        draw_anchors(ax, marks, xa, ya, zm)
        return fig
    draw_anchors(ax, marks, xa, ya)
    if scale.note:  # said on the figure too: a blank or one-colour panel is explained where it is seen
        ax.text(0.5, 0.03, scale.note, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, zorder=12,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.9})
    return fig


def _cell_edges(c: np.ndarray) -> tuple[float, float]:
    """Outer edges of 'nearest' cells centred on sorted coordinates ``c``."""
    s = np.sort(c)
    return float(s[0] - (s[1] - s[0]) / 2), float(s[-1] + (s[-1] - s[-2]) / 2)


def save_2d(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    out_stem: Path | str,
    *,
    levels: LevelSpec,
    kinds: Sequence[str] = KINDS_2D,
    **figure_kw: Any,
) -> list[Path]:
    """Write :func:`figure_2d` of each of ``kinds`` as ``<out_stem>_<kind>.png/.pdf``.

    Args:
        x, y: grid coordinates, shapes (nx,) and (ny,), at least 2 each.
        z: values of shape (ny, nx), ``z[j, i] = f(x[i], y[j])``; -1/NaN/inf are masked.
        out_stem: writes ``<stem>_contour``, ``<stem>_contourf``, ``<stem>_heatmap``,
            ``<stem>_3dsurface`` (each ``.png`` and ``.pdf``) for the requested ``kinds``.
        kinds: a subset of ``("contour", "contourf", "heatmap", "surface3d")``.
        figure_kw: :func:`figure_2d`'s keywords: ``title``, ``zlabel``, ``levels`` (a
            :class:`~landscape_exp.figures.levels.LevelSpec`: the paper's fixed
            ``arange(vmin, vmax, vlevel)`` or levels from the data; the 3D colour range is
            always the data's), ``log`` (plot log10 z), ``minimizer`` (the star, drawn only
            inside the grid; None for none), ``anchors`` (named points, e.g. the models of a
            plane), ``done`` (computed-points mask, see :func:`mask_invalid`).

    Returns:
        The written paths, png then pdf for each kind in order. When the data lies outside
        fixed levels a one-line warning is printed (once, not per kind).
    """
    for kind in kinds:  # all checked before any file is written
        if kind not in KINDS_2D:
            raise choice_error("2D plot kind", kind, KINDS_2D)
    zlabel = figure_kw.get("zlabel", "train loss")
    log = bool(figure_kw.get("log", False))
    _, _, zm, _ = prepared(x, y, z, figure_kw.get("done"), log, zlabel)
    warning = levels.scale(zm, log=log, what=zlabel).warning
    if warning:
        print(warning)
    written: list[Path] = []
    for kind in dict.fromkeys(kinds):  # de-duplicate, keep order
        written += save(figure_2d(kind, x, y, z, levels=levels, **figure_kw), with_suffix(out_stem, KIND_SUFFIX[kind]))
    return written
