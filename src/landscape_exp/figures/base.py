"""What every static figure shares: the canvas, the one save function, masking and validation.

Conventions shared with the rest of the project:

* 1D surfaces: ``x`` of shape (n,), metric arrays of shape (n,) named ``train_loss``,
  ``train_acc``, ``test_loss``, ``test_acc`` (accuracy in percent).
* 2D surfaces: ``x`` (nx,), ``y`` (ny,), metric ``z`` of shape (ny, nx) with
  ``z[j, i] = f(x[i], y[j])`` -- the ``np.meshgrid(x, y)`` layout of the original tool.
* ``-1`` marks a point that has not been computed yet; NaN/inf mark a computed point that
  diverged. Both are masked (never drawn). A boolean ``done`` array, when given, is the
  authority on which points were computed (so a genuine value of -1 survives).

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: no
pyplot state, no global backend switch, nothing left open. :func:`save` writes each one twice,
as ``<stem>.png`` (dpi :data:`PNG_DPI`) and ``<stem>.pdf``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullLocator

from landscape_exp.errors import UserError
from landscape_exp.figures.levels import Scale

__all__ = [
    "MASK_GREY",
    "NO_POINTS_TEXT",
    "PNG_DPI",
    "XLABEL_2D",
    "YLABEL_2D",
    "contour_lines",
    "draw_anchors",
    "label_contours",
    "level_colorbar",
    "mask_invalid",
    "new_figure",
    "prepared",
    "save",
    "surface_grid",
    "with_suffix",
]

PNG_DPI = 150
XLABEL_2D = "alpha (x direction)"
YLABEL_2D = "beta (y direction)"
NO_POINTS_TEXT = "no computed points"
MASK_GREY = "0.85"
# At most this many levels carry a label, each at least _LABEL_GAP (axes fractions) from the others.
_MAX_LABELS = 8
_LABEL_GAP = 0.12


# ----------------------------------------------------------------------------------------
# canvas and files
# ----------------------------------------------------------------------------------------
def new_figure(figsize: tuple[float, float] = (6.4, 4.8)) -> Figure:
    """A pyplot-free figure with an Agg canvas (so nothing global is touched or leaked)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def with_suffix(out_stem: Path | str, suffix: str) -> Path:
    """``out_stem`` + ``suffix`` as a string join: stems often contain dots (``x=-1:1:51``)."""
    stem = Path(out_stem)
    return stem.parent / (stem.name + suffix)


def save(fig: Figure, stem: Path | str) -> list[Path]:
    """Write ``<stem>.png`` (dpi :data:`PNG_DPI`) and ``<stem>.pdf``; return both paths.

    The figure's layout is frozen afterwards (it is meant to be discarded)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = with_suffix(stem, ".png")
    pdf = with_suffix(stem, ".pdf")
    fig.savefig(png, dpi=PNG_DPI, format="png")
    # The layout was solved while drawing the PNG; freezing it makes the PDF identical in
    # arrangement and skips a second (expensive) constrained-layout pass.
    fig.set_layout_engine("none")
    # No creation date: identical inputs give byte-identical PDFs.
    fig.savefig(pdf, format="pdf", metadata={"CreationDate": None})
    return [png, pdf]


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


def coords(values: np.ndarray, name: str, *, min_len: int = 1) -> np.ndarray:
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
    xa = coords(x, "x", min_len=2)
    ya = coords(y, "y", min_len=2)
    shape = np.shape(z)
    expected = (ya.size, xa.size)
    if shape != expected:
        hint = ""
        if shape == expected[::-1]:
            # The original tool stores (nx, ny) arrays filled in np.meshgrid(x, y).ravel() order:
            # their values are z.reshape(ny, nx), which a transpose would scramble.
            hint = (f" (an array of the original tool's files, shape (len(x), len(y)), is z.reshape({ya.size}, "
                    f"{xa.size}), not z.T; z[j, i] must be f(x[i], y[j]))")
        raise UserError(
            f"surface values have shape {shape}; expected (len(y), len(x)) = {expected}{hint}"
        )
    return xa, ya, mask_invalid(z, done)


def log10_masked(zm: np.ma.MaskedArray) -> np.ma.MaskedArray:
    """log10 of the unmasked entries; non-positive values are masked too (log undefined)."""
    mask = np.ma.getmaskarray(zm) | ~(np.ma.filled(zm, np.nan) > 0)
    data = np.full(zm.shape, np.nan)
    data[~mask] = np.log10(zm.data[~mask])
    return np.ma.MaskedArray(data, mask=mask)


def prepared(x: np.ndarray, y: np.ndarray, z: np.ndarray, done: np.ndarray | None, log: bool,
             zlabel: str) -> tuple[np.ndarray, np.ndarray, np.ma.MaskedArray, str]:
    """The validated grid, the masked values (log10 when ``log``) and the colour-bar label."""
    xa, ya, zm = surface_grid(x, y, z, done)
    if log:
        return xa, ya, log10_masked(zm), f"log10({zlabel})"
    return xa, ya, zm, zlabel


# ----------------------------------------------------------------------------------------
# shared decorations
# ----------------------------------------------------------------------------------------
def no_points(ax: Axes) -> None:
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


def masked_note(mask: np.ndarray) -> str:
    """A title suffix saying how many grid points are missing, so a half-computed surface
    is not misread; empty when nothing is masked."""
    n_masked = int(mask.sum())
    if not n_masked:
        return ""
    return f"\n({n_masked} of {mask.size} points missing: not computed or diverged)"


def shade_masked(ax: Axes, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> None:
    """Grey cells under masked grid points, so gaps read as 'no data' and not as 'low'."""
    if mask.any():
        cells = np.ma.MaskedArray(np.ones(mask.shape), mask=~mask)
        ax.pcolormesh(
            x, y, cells, cmap=ListedColormap([MASK_GREY]), shading="nearest", zorder=0.5
        )


def label_contours(ax: Axes, cs: ContourSet, avoid: Sequence[tuple[float, float]] = (), fmt: str = "%.3g") -> list:
    """Label a few contour levels, each once and apart from the rest, so labels never pile up
    where the surface is steep: at most :data:`_MAX_LABELS` evenly chosen levels, each at the
    point of its lines farthest (up to :data:`_LABEL_GAP`, in fractions of the axes) from the
    labels already placed, the ``avoid`` points (markers) and the axes' edges; a level with no
    point that far is left unlabelled. Returns the label texts."""
    levels = np.asarray(cs.levels)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    origin, span = np.array([min(x0, x1), min(y0, y1)]), np.array([abs(x1 - x0) or 1.0, abs(y1 - y0) or 1.0])
    taken = [(np.asarray(p, dtype=float) - origin) / span for p in avoid]
    placed: list[np.ndarray] = []  # label positions in data units
    chosen: list[float] = []
    for i in range(0, levels.size, max(1, int(np.ceil(levels.size / _MAX_LABELS)))):
        segs = [seg for seg in cs.allsegs[i] if len(seg) >= 2]
        if not segs:
            continue
        rel = (np.concatenate(segs) - origin) / span
        room = np.minimum.reduce([rel[:, 0], 1 - rel[:, 0], rel[:, 1], 1 - rel[:, 1]]) * 2  # edges: half the gap
        for q in taken:
            room = np.minimum(room, np.abs(rel - q).max(axis=1))
        best = int(np.argmax(np.minimum(room, _LABEL_GAP * 1.5)))  # first of the roomiest: along the line
        if room[best] >= _LABEL_GAP:
            taken.append(rel[best])
            placed.append(rel[best] * span + origin)
            chosen.append(float(levels[i]))
    if not chosen:
        return []
    return ax.clabel(cs, levels=chosen, manual=[tuple(p) for p in placed], inline=True, inline_spacing=3,
                     fontsize=8, fmt=fmt)


def level_colorbar(fig: Figure, mappable: Any, ax: Axes, label: str, levels: np.ndarray, **kw: Any) -> Any:
    """A colour bar ticked at (every few of) the contour levels, written as %.3g."""
    cbar = fig.colorbar(mappable, ax=ax, label=label, **kw)
    cbar.set_ticks(levels[:: max(1, int(np.ceil(len(levels) / 10)))])
    cbar.ax.yaxis.set_minor_locator(NullLocator())
    cbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    return cbar


def contour_lines(fig: Figure, ax: Axes, x: np.ndarray, y: np.ndarray, zm: np.ma.MaskedArray, scale: Scale,
                  label: str, avoid: Sequence[tuple[float, float]] = ()) -> ContourSet:
    """The contour figure's body: masked cells grey, the lines at ``scale``'s levels and colours, a
    few labels kept off ``avoid`` (:func:`label_contours`) and a colour bar ticked at the levels."""
    shade_masked(ax, x, y, np.ma.getmaskarray(zm))
    cs = ax.contour(x, y, zm, levels=scale.levels, cmap="viridis", norm=scale.norm, linewidths=1.0)
    label_contours(ax, cs, avoid=avoid)
    level_colorbar(fig, cs, ax, label, scale.levels)
    return cs


def draw_anchors(ax: Axes, anchors: Mapping[str, tuple[float, float]] | None, x: np.ndarray, y: np.ndarray,
                 z: np.ma.MaskedArray | None = None) -> int:
    """Mark and name the models a plane is spanned by (e.g. theta1 at (0,0), theta2 at (1,0),
    theta3 at (0,1)) where they lie inside the grid; on a 3D axes (``z`` given) at the height of
    the nearest computed grid point. The first is a red star, the others white dots; an empty
    name draws the marker alone. Returns the number drawn."""
    drawn = 0
    for k, (name, (px, py)) in enumerate((anchors or {}).items()):
        if not (x.min() <= px <= x.max() and y.min() <= py <= y.max()):
            continue
        style = dict(marker="*" if k == 0 else "o", color="red" if k == 0 else "white", zorder=10)
        size = 14 if k == 0 else 8
        text = dict(fontsize=9, fontweight="bold", color="black", zorder=11,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.7})
        if z is None:
            ax.plot([px], [py], linestyle="none", markersize=size, markeredgecolor="black", **style)
            if name:
                ax.annotate(name, (px, py), xytext=(6, 6), textcoords="offset points", **text)
        else:
            i, j = int(np.abs(x - px).argmin()), int(np.abs(y - py).argmin())
            if np.ma.getmaskarray(z)[j, i]:
                continue
            pz = float(z[j, i])
            ax.scatter([px], [py], [pz], marker=style["marker"], s=size**2, c=style["color"], edgecolors="black",
                       depthshade=False, zorder=10)
            if name:
                ax.text(px, py, pz, f"  {name}", **text)
        drawn += 1
    return drawn
