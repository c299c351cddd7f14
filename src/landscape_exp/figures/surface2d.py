"""2D surfaces: contour, filled contour, heat map and 3D surface (like ``plot_2D.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the "3d" projection)

from landscape_exp.errors import UserError, choice_error
from landscape_exp.figures.base import (
    MASK_GREY,
    NO_POINTS_TEXT,
    XLABEL_2D,
    YLABEL_2D,
    contour_levels,
    finite,
    log10_masked,
    masked_note,
    new_figure,
    no_points,
    save,
    shade_masked,
    surface_grid,
    with_suffix,
)

__all__ = ["KINDS_2D", "KIND_SUFFIX", "figure_2d", "save_2d"]

KINDS_2D: tuple[str, ...] = ("contour", "contourf", "heatmap", "surface3d")
# File suffix per 2D kind; "3dsurface" is the name the original plot_2D.py used.
KIND_SUFFIX = {
    "contour": "_contour",
    "contourf": "_contourf",
    "heatmap": "_heatmap",
    "surface3d": "_3dsurface",
}


def _minimizer(minimizer: tuple[float, float] | None) -> tuple[float, float] | None:
    """Validate the minimizer marker position."""
    if minimizer is None:
        return None
    try:
        mx, my = minimizer
    except (TypeError, ValueError):
        raise UserError(f"minimizer must be a pair (x, y) or None; got {minimizer!r}") from None
    return finite(mx, "minimizer x"), finite(my, "minimizer y")


def _inside(point: tuple[float, float], x: np.ndarray, y: np.ndarray) -> bool:
    """Is the point inside the rectangle spanned by the grid?"""
    return bool(x.min() <= point[0] <= x.max() and y.min() <= point[1] <= y.max())


def _star(ax: Axes, point: tuple[float, float]) -> None:
    """The minimizer marker on a 2D axes."""
    ax.plot(
        [point[0]],
        [point[1]],
        linestyle="none",
        marker="*",
        markersize=14,
        markerfacecolor="red",
        markeredgecolor="black",
        zorder=5,
    )


def figure_2d(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    title: str,
    zlabel: str = "train loss",
    vmin: float = 0.1,
    vmax: float = 10,
    vlevel: float = 0.5,
    log: bool = False,
    minimizer: tuple[float, float] | None = (0.0, 0.0),
    done: np.ndarray | None = None,
) -> Figure:
    """Build (without saving) one 2D-surface figure; see :func:`save_2d` for the arguments.

    Exposed so tests and notebooks can inspect the artists (e.g. the contour segments).
    """
    if kind not in KINDS_2D:
        raise choice_error("2D plot kind", kind, KINDS_2D)
    xa, ya, zm = surface_grid(x, y, z, done)
    levels = contour_levels(vmin, vmax, vlevel, log)
    star = _minimizer(minimizer)
    if log:
        zm = log10_masked(zm)
        label = f"log10({zlabel})"
        norm = Normalize(np.log10(float(vmin)), np.log10(float(vmax)))
    else:
        label = zlabel
        norm = Normalize(float(vmin), float(vmax))
    mask = np.ma.getmaskarray(zm)
    empty = bool(mask.all())

    fig = new_figure()
    if kind == "surface3d":
        # computed_zorder=False: the minimizer star is drawn over the surface, not hidden.
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
        shade_masked(ax, xa, ya, mask)
        cs = ax.contour(xa, ya, zm, levels=levels, cmap="viridis", linewidths=1.0)
        ax.clabel(cs, inline=True, fontsize=8, fmt="%.3g")
        fig.colorbar(cs, ax=ax, label=label)
    elif kind == "contourf":
        # Holes left by contourf around masked points are not cell-shaped: grey background.
        if mask.any():
            ax.set_facecolor(MASK_GREY)
        # extend="both": values beyond [vmin, vmax) are coloured, not left blank.
        cs = ax.contourf(xa, ya, zm, levels=levels, cmap="viridis", extend="both")
        fig.colorbar(cs, ax=ax, label=label)
    elif kind == "heatmap":
        cmap = mpl.colormaps["viridis"].with_extremes(bad=MASK_GREY)
        # "nearest": one cell centred on each grid point, right for non-uniform grids too,
        # and the origin is at the bottom-left (the original inverted seaborn's y axis).
        mesh = ax.pcolormesh(xa, ya, zm, cmap=cmap, norm=norm, shading="nearest")
        fig.colorbar(mesh, ax=ax, label=label, extend="both")
        ax.set_xlim(*_cell_edges(xa))
        ax.set_ylim(*_cell_edges(ya))
    else:  # surface3d
        xx, yy = np.meshgrid(xa, ya)
        surf = ax.plot_surface(
            xx,
            yy,
            zm.filled(np.nan),
            cmap="coolwarm",
            norm=norm,
            linewidth=0,
            antialiased=False,
        )
        ax.set_zlabel(label)
        fig.colorbar(surf, ax=ax, shrink=0.6, aspect=12, pad=0.12, label=label)
        if star is not None and _inside(star, xa, ya):
            i = int(np.abs(xa - star[0]).argmin())
            j = int(np.abs(ya - star[1]).argmin())
            if not mask[j, i]:
                ax.scatter(
                    [star[0]], [star[1]], [float(zm[j, i])], marker="*", s=180,
                    c="red", edgecolors="black", depthshade=False, zorder=10,
                )
        return fig

    if star is not None and _inside(star, xa, ya):
        _star(ax, star)
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
        figure_kw: :func:`figure_2d`'s keywords: ``title``, ``zlabel``, ``vmin``, ``vmax``,
            ``vlevel`` (contour levels ``np.arange(vmin, vmax, vlevel)`` and the colour range;
            see :func:`contour_levels` for ``log``), ``log`` (plot log10 z), ``minimizer``
            (the star, drawn only inside the grid; None for none), ``done`` (computed-points
            mask, see :func:`mask_invalid`).

    Returns:
        The written paths, png then pdf for each kind in order.
    """
    for kind in kinds:  # all checked before any file is written
        if kind not in KINDS_2D:
            raise choice_error("2D plot kind", kind, KINDS_2D)
    written: list[Path] = []
    for kind in dict.fromkeys(kinds):  # de-duplicate, keep order
        written += save(figure_2d(kind, x, y, z, **figure_kw), with_suffix(out_stem, KIND_SUFFIX[kind]))
    return written
