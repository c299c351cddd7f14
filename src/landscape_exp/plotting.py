"""Static figures of loss surfaces (1D curves, 2D contours, 3D surfaces, paths, curves).

Conventions shared with the rest of the project:

* 1D surfaces: ``x`` of shape (n,), metric arrays of shape (n,) named ``train_loss``,
  ``train_acc``, ``test_loss``, ``test_acc`` (accuracy in percent).
* 2D surfaces: ``x`` (nx,), ``y`` (ny,), metric ``z`` of shape (ny, nx) with
  ``z[j, i] = f(x[i], y[j])`` -- the ``np.meshgrid(x, y)`` layout of the original tool.
* ``-1`` marks a point that has not been computed yet; NaN/inf mark a computed point that
  diverged. Both are masked (never drawn). A boolean ``done`` array, when given, is the
  authority on which points were computed (so a genuine value of -1 survives).

Every public ``plot_*`` function writes each figure twice, as ``<stem>.png`` (dpi 150) and
``<stem>.pdf``, and returns the written paths. Figures are plain
:class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot state, no
global backend switch, nothing left open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the "3d" projection)

from landscape_exp.errors import UserError, choice_error

__all__ = [
    "KINDS_2D",
    "METRICS_1D",
    "NO_POINTS_TEXT",
    "PNG_DPI",
    "XLABEL_2D",
    "YLABEL_2D",
    "contour_levels",
    "figure_1d",
    "figure_2d",
    "figure_curves",
    "figure_path_on_contour",
    "mask_invalid",
    "plot_1d",
    "plot_2d",
    "plot_curves",
    "plot_path_on_contour",
]

PNG_DPI = 150
METRICS_1D: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc")
KINDS_2D: tuple[str, ...] = ("contour", "contourf", "heatmap", "surface3d")
# File suffix per 2D kind; "3dsurface" is the name the original plot_2D.py used.
_KIND_SUFFIX = {
    "contour": "_contour",
    "contourf": "_contourf",
    "heatmap": "_heatmap",
    "surface3d": "_3dsurface",
}
XLABEL_2D = "alpha (x direction)"
YLABEL_2D = "beta (y direction)"
NO_POINTS_TEXT = "no computed points"
# Guard against a typo such as vlevel=1e-6 turning into millions of contour levels.
_MAX_LEVELS = 1000
_MASK_GREY = "0.85"
_CURVE_KEYS: tuple[str, ...] = (
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "train_err",
    "test_err",
)


# ----------------------------------------------------------------------------------------
# masking and validation
# ----------------------------------------------------------------------------------------
def mask_invalid(
    z: np.ndarray,
    done: np.ndarray | None = None,
    *,
    missing: float | None = -1.0,
) -> np.ma.MaskedArray:
    """Mask the points of a surface that must not be drawn.

    Args:
        z: metric values, any shape (a masked array's own mask is kept).
        done: optional boolean array of ``z``'s shape, True where the point was computed.
            When given it is authoritative: ``missing`` is then ignored, so a computed
            value that happens to equal -1 is kept.
        missing: the not-yet-computed marker (the surface files use -1); ``None`` disables it.

    Returns:
        A float64 masked array; masked entries (not computed, NaN, +-inf) hold NaN in
        ``.data`` so that accidental use of the raw data cannot pass for a real value.
    """
    data = np.array(np.ma.getdata(z), dtype=np.float64, copy=True)
    mask = ~np.isfinite(data)
    if isinstance(z, np.ma.MaskedArray):
        mask |= np.ma.getmaskarray(z)
    if done is not None:
        done_arr = np.asarray(done)
        if done_arr.shape != data.shape:
            raise UserError(
                f"done mask has shape {done_arr.shape}; it must match the values' shape {data.shape}"
            )
        mask |= ~done_arr.astype(bool)
    elif missing is not None:
        mask |= data == missing
    data[mask] = np.nan
    return np.ma.MaskedArray(data, mask=mask)


def _coords(values: np.ndarray, name: str, *, min_len: int = 1) -> np.ndarray:
    """A 1D array of finite float coordinates with at least ``min_len`` entries."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise UserError(f"{name} must be a 1D array of coordinates; got shape {arr.shape}")
    if arr.size < min_len:
        raise UserError(f"{name} needs at least {min_len} coordinates to plot; got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{name} coordinates must all be finite; got {arr.tolist()}")
    return arr


def surface_grid(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, done: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ma.MaskedArray]:
    """Validate a 2D surface: ``x`` (nx,), ``y`` (ny,), ``z`` (ny, nx); return z masked.

    Shared by the figures, the HTML view and the VTP export."""
    xa = _coords(x, "x", min_len=2)
    ya = _coords(y, "y", min_len=2)
    shape = np.shape(z)
    expected = (ya.size, xa.size)
    if shape != expected:
        hint = " (transposed? z[j, i] must be f(x[i], y[j]))" if shape == expected[::-1] else ""
        raise UserError(
            f"surface values have shape {shape}; expected (len(y), len(x)) = {expected}{hint}"
        )
    return xa, ya, mask_invalid(z, done)


def _finite(value: float, name: str) -> float:
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
    linear spec gives, evenly spaced in log10 over [log10 vmin, log10 vmax). Defaults
    (0.1, 10, 0.5) thus give 20 levels 0.1 decade apart.
    """
    lo = _finite(vmin, "vmin")
    hi = _finite(vmax, "vmax")
    step = _finite(vlevel, "vlevel")
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


def _log10_masked(zm: np.ma.MaskedArray) -> np.ma.MaskedArray:
    """log10 of the unmasked entries; non-positive values are masked too (log undefined)."""
    mask = np.ma.getmaskarray(zm) | ~(np.ma.filled(zm, np.nan) > 0)
    data = np.full(zm.shape, np.nan)
    data[~mask] = np.log10(zm.data[~mask])
    return np.ma.MaskedArray(data, mask=mask)


def _minimizer(minimizer: tuple[float, float] | None) -> tuple[float, float] | None:
    """Validate the minimizer marker position."""
    if minimizer is None:
        return None
    try:
        mx, my = minimizer
    except (TypeError, ValueError):
        raise UserError(f"minimizer must be a pair (x, y) or None; got {minimizer!r}") from None
    return _finite(mx, "minimizer x"), _finite(my, "minimizer y")


# ----------------------------------------------------------------------------------------
# figure plumbing
# ----------------------------------------------------------------------------------------
def _new_figure(figsize: tuple[float, float] = (6.4, 4.8)) -> Figure:
    """A pyplot-free figure with an Agg canvas (so nothing global is touched or leaked)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _with_suffix(out_stem: Path | str, suffix: str) -> Path:
    """``out_stem`` + ``suffix`` as a string join: stems often contain dots (``x=-1:1:51``)."""
    stem = Path(out_stem)
    return stem.parent / (stem.name + suffix)


def _save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``<stem>.png`` (dpi 150) and ``<stem>.pdf``; return both paths.

    The figure's layout is frozen afterwards (it is meant to be discarded)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = _with_suffix(stem, ".png")
    pdf = _with_suffix(stem, ".pdf")
    fig.savefig(png, dpi=PNG_DPI, format="png")
    # The layout was solved while drawing the PNG; freezing it makes the PDF identical in
    # arrangement and skips a second (expensive) constrained-layout pass.
    fig.set_layout_engine("none")
    # No creation date: identical inputs give byte-identical PDFs.
    fig.savefig(pdf, format="pdf", metadata={"CreationDate": None})
    return [png, pdf]


def _no_points(ax: Axes) -> None:
    """Mark an axes whose surface has nothing to draw."""
    ax.text(
        0.5,
        0.5,
        NO_POINTS_TEXT,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=14,
        color="0.3",
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"},
    )


def _masked_note(mask: np.ndarray) -> str:
    """A title suffix saying how many grid points are missing, so a half-computed surface
    is not misread; empty when nothing is masked."""
    n_masked = int(mask.sum())
    if not n_masked:
        return ""
    return f"\n({n_masked} of {mask.size} points missing: not computed or diverged)"


def _shade_masked(ax: Axes, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> None:
    """Grey cells under masked grid points, so gaps read as 'no data' and not as 'low'."""
    if mask.any():
        cells = np.ma.MaskedArray(np.ones(mask.shape), mask=~mask)
        ax.pcolormesh(
            x, y, cells, cmap=ListedColormap([_MASK_GREY]), shading="nearest", zorder=0.5
        )


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


# ----------------------------------------------------------------------------------------
# 2D surfaces
# ----------------------------------------------------------------------------------------
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
    """Build (without saving) one 2D-surface figure; see :func:`plot_2d` for the arguments.

    Exposed so tests and notebooks can inspect the artists (e.g. the contour segments).
    """
    if kind not in KINDS_2D:
        raise choice_error("2D plot kind", kind, KINDS_2D)
    xa, ya, zm = surface_grid(x, y, z, done)
    levels = contour_levels(vmin, vmax, vlevel, log)
    star = _minimizer(minimizer)
    if log:
        zm = _log10_masked(zm)
        label = f"log10({zlabel})"
        norm = Normalize(np.log10(float(vmin)), np.log10(float(vmax)))
    else:
        label = zlabel
        norm = Normalize(float(vmin), float(vmax))
    mask = np.ma.getmaskarray(zm)
    empty = bool(mask.all())

    fig = _new_figure()
    if kind == "surface3d":
        # computed_zorder=False: the minimizer star is drawn over the surface, not hidden.
        ax = fig.add_subplot(projection="3d", computed_zorder=False)
    else:
        ax = fig.add_subplot()
    ax.set_title(title + ("" if empty else _masked_note(mask)))
    ax.set_xlabel(XLABEL_2D)
    ax.set_ylabel(YLABEL_2D)
    ax.set_xlim(xa.min(), xa.max())
    ax.set_ylim(ya.min(), ya.max())
    if empty:
        if kind == "surface3d":
            ax.set_zlabel(label)
            ax.text2D(0.5, 0.5, NO_POINTS_TEXT, transform=ax.transAxes, ha="center", fontsize=14)
        else:
            _no_points(ax)
        return fig

    if kind == "contour":
        _shade_masked(ax, xa, ya, mask)
        cs = ax.contour(xa, ya, zm, levels=levels, cmap="viridis", linewidths=1.0)
        ax.clabel(cs, inline=True, fontsize=8, fmt="%.3g")
        fig.colorbar(cs, ax=ax, label=label)
    elif kind == "contourf":
        # Holes left by contourf around masked points are not cell-shaped: grey background.
        if mask.any():
            ax.set_facecolor(_MASK_GREY)
        # extend="both": values beyond [vmin, vmax) are coloured, not left blank.
        cs = ax.contourf(xa, ya, zm, levels=levels, cmap="viridis", extend="both")
        fig.colorbar(cs, ax=ax, label=label)
    elif kind == "heatmap":
        cmap = mpl.colormaps["viridis"].with_extremes(bad=_MASK_GREY)
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


def plot_2d(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    out_stem: Path,
    *,
    title: str,
    zlabel: str = "train loss",
    vmin: float = 0.1,
    vmax: float = 10,
    vlevel: float = 0.5,
    log: bool = False,
    minimizer: tuple[float, float] | None = (0.0, 0.0),
    kinds: Sequence[str] = KINDS_2D,
    done: np.ndarray | None = None,
) -> list[Path]:
    """Contour, filled contour, heat map and 3D surface of a 2D surface (like ``plot_2D.py``).

    Args:
        x, y: grid coordinates, shapes (nx,) and (ny,), at least 2 each.
        z: values of shape (ny, nx), ``z[j, i] = f(x[i], y[j])``; -1/NaN/inf are masked.
        out_stem: writes ``<stem>_contour``, ``<stem>_contourf``, ``<stem>_heatmap``,
            ``<stem>_3dsurface`` (each ``.png`` and ``.pdf``) for the requested ``kinds``.
        title: figure title.
        zlabel: what z is (colour-bar / z-axis label).
        vmin, vmax, vlevel: contour levels ``np.arange(vmin, vmax, vlevel)`` and the colour
            range of the heat map and 3D surface; see :func:`contour_levels` for ``log``.
        log: plot log10(z) (non-positive values are masked).
        minimizer: where to put the star (the centre of the plot by default); None for none.
            Drawn only when it lies inside the grid.
        kinds: a subset of ``("contour", "contourf", "heatmap", "surface3d")``.
        done: optional computed-points mask, see :func:`mask_invalid`.

    Returns:
        The written paths, png then pdf for each kind in order.
    """
    for kind in kinds:
        if kind not in KINDS_2D:
            raise choice_error("2D plot kind", kind, KINDS_2D)
    written: list[Path] = []
    for kind in dict.fromkeys(kinds):  # de-duplicate, keep order
        fig = figure_2d(
            kind, x, y, z, title=title, zlabel=zlabel, vmin=vmin, vmax=vmax,
            vlevel=vlevel, log=log, minimizer=minimizer, done=done,
        )
        written += _save(fig, _with_suffix(out_stem, _KIND_SUFFIX[kind]))
    return written


def figure_path_on_contour(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    path_xy: np.ndarray,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    labels: Sequence[str] | None = None,
    zlabel: str = "loss",
    vmin: float = 0.1,
    vmax: float = 10,
    vlevel: float = 0.5,
    log: bool = False,
    done: np.ndarray | None = None,
) -> Figure:
    """Contour of a surface with an optimization path on it (the PCA trajectory plot).

    Args:
        x, y, z: the surface, same conventions as :func:`plot_2d`.
        path_xy: (k, 2) path coordinates in the plane of the surface; rows with a
            non-finite coordinate are skipped.
        title, xlabel, ylabel: text; the axis labels usually carry the explained variance
            (e.g. ``"PC1: 87.3 %"``).
        labels: optional k texts (e.g. epochs) written next to the path points; use ""
            to leave a point unlabelled.
        zlabel: what z is (colour-bar label).
        vmin, vmax, vlevel, log: contour levels, see :func:`contour_levels`.
        done: optional computed-points mask for ``z``.
    """
    xa, ya, zm = surface_grid(x, y, z, done)
    levels = contour_levels(vmin, vmax, vlevel, log)
    path = np.asarray(path_xy, dtype=np.float64)
    if path.ndim != 2 or path.shape[1] != 2 or path.shape[0] < 1:
        raise UserError(f"path_xy must have shape (k, 2) with k >= 1; got {path.shape}")
    if labels is not None and len(labels) != path.shape[0]:
        raise UserError(
            f"got {len(labels)} path labels for {path.shape[0]} path points; they must match"
        )
    label = zlabel
    if log:
        zm = _log10_masked(zm)
        label = f"log10({zlabel})"
    mask = np.ma.getmaskarray(zm)

    fig = _new_figure()
    ax = fig.add_subplot()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if mask.all():
        ax.set_title(title)
        _no_points(ax)
    else:
        ax.set_title(title + _masked_note(mask))
        _shade_masked(ax, xa, ya, mask)
        cs = ax.contour(xa, ya, zm, levels=levels, cmap="viridis", linewidths=1.0)
        ax.clabel(cs, inline=True, fontsize=7, fmt="%.3g")
        fig.colorbar(cs, ax=ax, label=label)

    ok = np.all(np.isfinite(path), axis=1)
    pts = path[ok]
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


def plot_path_on_contour(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    path_xy: np.ndarray,
    out_stem: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    labels: Sequence[str] | None = None,
    zlabel: str = "loss",
    vmin: float = 0.1,
    vmax: float = 10,
    vlevel: float = 0.5,
    log: bool = False,
    done: np.ndarray | None = None,
) -> list[Path]:
    """Write :func:`figure_path_on_contour` as ``<out_stem>.png`` and ``<out_stem>.pdf``."""
    fig = figure_path_on_contour(
        x, y, z, path_xy, title=title, xlabel=xlabel, ylabel=ylabel, labels=labels,
        zlabel=zlabel, vmin=vmin, vmax=vmax, vlevel=vlevel, log=log, done=done,
    )
    return _save(fig, Path(out_stem))


# ----------------------------------------------------------------------------------------
# 1D curves
# ----------------------------------------------------------------------------------------
def _curve(values: np.ndarray, n: int, name: str, done: np.ndarray | None) -> np.ndarray:
    """A metric array of shape (n,) with masked points as NaN (matplotlib breaks lines there)."""
    if np.shape(values) != (n,):
        raise UserError(f"{name} has shape {np.shape(values)}; expected ({n},) like the coordinates")
    return mask_invalid(values, done).filled(np.nan)


def _draw_line(ax: Axes, x: np.ndarray, v: np.ndarray, **style: object) -> Line2D:
    """Plot ``v`` against ``x`` with NaN gaps; isolated valid points get a marker of their own
    (a line through NaN neighbours would draw nothing and hide a computed point)."""
    (line,) = ax.plot(x, v, **style)
    ok = np.isfinite(v)
    left = np.concatenate([[False], ok[:-1]])
    right = np.concatenate([ok[1:], [False]])
    lonely = ok & ~left & ~right
    if lonely.any():
        ax.plot(x[lonely], v[lonely], linestyle="none", marker="o", markersize=3,
                color=line.get_color())
    return line


def figure_1d(
    x: np.ndarray,
    metrics: Mapping[str, np.ndarray],
    *,
    title: str,
    xlabel: str = "alpha",
    log: bool = False,
    loss_max: float | None = None,
    acc: bool = True,
    done: np.ndarray | None = None,
) -> Figure:
    """Loss (left axis) and accuracy (right axis) along a 1D slice, like ``plot_1D.py``.

    Args:
        x: coordinates, shape (n,).
        metrics: any of ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``, each (n,).
            Train is drawn solid, test dashed; loss blue, accuracy red.
        title, xlabel: text.
        log: log-scale loss axis (non-positive losses are masked).
        loss_max: top of the loss axis (curves above it are clipped); None for automatic.
        acc: draw the accuracy curves (right axis, 0..100 %).
        done: optional (n,) computed-points mask applied to every metric.
    """
    xa = _coords(x, "x")
    n = xa.size
    if not metrics:
        raise UserError(f"no metrics to plot; give any of {', '.join(METRICS_1D)}")
    for key in metrics:
        if key not in METRICS_1D:
            raise choice_error("1D metric", key, METRICS_1D)
    top = None if loss_max is None else _finite(loss_max, "loss_max")
    if top is not None and top <= 0:
        raise UserError(f"loss_max must be positive; got {top}")
    curves = {k: _curve(v, n, k, done) for k, v in metrics.items()}
    if log:
        for k in ("train_loss", "test_loss"):
            if k in curves:
                curves[k] = np.where(curves[k] > 0, curves[k], np.nan)
    loss_keys = [k for k in ("train_loss", "test_loss") if k in curves]
    acc_keys = [k for k in ("train_acc", "test_acc") if k in curves] if acc else []
    if not loss_keys and not acc_keys:
        raise UserError("acc=False but only accuracy metrics were given: nothing to plot")

    fig = _new_figure()
    ax1 = fig.add_subplot()
    ax1.set_title(title)
    ax1.set_xlabel(xlabel)
    if n > 1:
        ax1.set_xlim(xa.min(), xa.max())
    handles = []
    style = {"train": ("-", "Training"), "test": ("--", "Test")}
    loss_ax = ax1 if loss_keys else None
    acc_ax = (ax1.twinx() if loss_keys else ax1) if acc_keys else None
    if loss_ax is not None:
        if log:
            loss_ax.set_yscale("log")
        for k in loss_keys:
            ls, word = style[k.split("_")[0]]
            handles.append(_draw_line(loss_ax, xa, curves[k], color="tab:blue", linestyle=ls,
                                      linewidth=1.5, label=f"{word} loss"))
        loss_ax.set_ylabel("Loss", color="tab:blue")
        loss_ax.tick_params("y", colors="tab:blue")
        valid = np.concatenate([curves[k][np.isfinite(curves[k])] for k in loss_keys])
        if log:
            if top is not None:
                loss_ax.set_ylim(top=top)
        else:
            # The original starts the loss axis at 0; keep that unless values are negative.
            bottom = min(0.0, float(valid.min())) if valid.size else 0.0
            if top is not None and top > bottom:
                loss_ax.set_ylim(bottom, top)
            else:
                loss_ax.set_ylim(bottom=bottom)
    if acc_ax is not None:
        for k in acc_keys:
            ls, word = style[k.split("_")[0]]
            handles.append(_draw_line(acc_ax, xa, curves[k], color="tab:red", linestyle=ls,
                                      linewidth=1.5, label=f"{word} accuracy"))
        acc_ax.set_ylabel("Accuracy (%)", color="tab:red")
        acc_ax.tick_params("y", colors="tab:red")
        acc_ax.set_ylim(0, 100)
    if all(not np.isfinite(v).any() for k, v in curves.items() if k in loss_keys + acc_keys):
        _no_points(ax1)
    # Outside the axes: the legend never hides a curve.
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
               fontsize=8, frameon=False)
    return fig


def plot_1d(
    x: np.ndarray,
    metrics: Mapping[str, np.ndarray],
    out_stem: Path,
    *,
    title: str,
    xlabel: str = "alpha",
    log: bool = False,
    loss_max: float | None = None,
    acc: bool = True,
    done: np.ndarray | None = None,
) -> list[Path]:
    """Write :func:`figure_1d` as ``<out_stem>.png`` and ``<out_stem>.pdf``."""
    fig = figure_1d(
        x, metrics, title=title, xlabel=xlabel, log=log, loss_max=loss_max, acc=acc, done=done
    )
    return _save(fig, Path(out_stem))


def figure_curves(
    t: np.ndarray,
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    title: str,
) -> Figure:
    """Loss and error (%) along connecting curves (mode connectivity), one panel each.

    Args:
        t: curve parameter values, shape (n,) (usually in [0, 1]).
        curves: ``{curve name: {metric: (n,) array}}`` with metrics among ``train_loss``,
            ``test_loss`` and, for the error panel, ``train_err``/``test_err`` or
            ``train_acc``/``test_acc`` (converted to error = 100 - accuracy). Each curve
            gets a colour; train is solid, test dashed. -1/NaN/inf points are masked.
        title: figure title.
    """
    ta = _coords(t, "t")
    n = ta.size
    if not curves:
        raise UserError("no curves to plot; give e.g. {'bezier': {...}, 'segment': {...}}")
    fig = _new_figure((10.0, 4.2))
    fig.suptitle(title)
    ax_loss = fig.add_subplot(1, 2, 1)
    ax_err = fig.add_subplot(1, 2, 2)
    colours = mpl.colormaps["tab10"].colors
    anything = False
    for idx, (name, metrics) in enumerate(curves.items()):
        colour = colours[idx % len(colours)]
        for key in metrics:
            if key not in _CURVE_KEYS:
                raise choice_error(f"metric of curve {name!r}", key, _CURVE_KEYS)
        for split, ls in (("train", "-"), ("test", "--")):
            if f"{split}_acc" in metrics and f"{split}_err" in metrics:
                raise UserError(
                    f"curve {name!r} gives both {split}_acc and {split}_err; give only one"
                )
            if f"{split}_loss" in metrics:
                v = _curve(metrics[f"{split}_loss"], n, f"{name}.{split}_loss", None)
                anything |= bool(np.isfinite(v).any())
                _draw_line(ax_loss, ta, v, color=colour, linestyle=ls, linewidth=1.5,
                           label=f"{name} ({split})")
            err = None
            if f"{split}_err" in metrics:
                err = _curve(metrics[f"{split}_err"], n, f"{name}.{split}_err", None)
            elif f"{split}_acc" in metrics:
                err = 100.0 - _curve(metrics[f"{split}_acc"], n, f"{name}.{split}_acc", None)
            if err is not None:
                anything |= bool(np.isfinite(err).any())
                _draw_line(ax_err, ta, err, color=colour, linestyle=ls, linewidth=1.5,
                           label=f"{name} ({split})")
    for ax, ylabel in ((ax_loss, "Loss"), (ax_err, "Error (%)")):
        ax.set_xlabel("t (curve parameter)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if n > 1:
            ax.set_xlim(ta.min(), ta.max())
    # One shared legend below both panels (same colours and styles in each).
    seen: dict[str, Line2D] = {}
    for ax in (ax_loss, ax_err):
        for handle, text in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(text, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncols=min(len(seen), 4), fontsize=8, frameon=False)
    ax_err.set_ylim(bottom=0)
    if not anything:
        _no_points(ax_loss)
    return fig


def plot_curves(
    t: np.ndarray,
    curves: Mapping[str, Mapping[str, np.ndarray]],
    out_stem: Path,
    *,
    title: str,
) -> list[Path]:
    """Write :func:`figure_curves` as ``<out_stem>.png`` and ``<out_stem>.pdf``."""
    return _save(figure_curves(t, curves, title=title), Path(out_stem))
