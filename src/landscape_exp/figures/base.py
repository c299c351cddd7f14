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

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from landscape_exp.errors import UserError

__all__ = [
    "MASK_GREY",
    "NO_POINTS_TEXT",
    "PNG_DPI",
    "XLABEL_2D",
    "YLABEL_2D",
    "contour_levels",
    "mask_invalid",
    "new_figure",
    "save",
    "surface_grid",
    "with_suffix",
]

PNG_DPI = 150
XLABEL_2D = "alpha (x direction)"
YLABEL_2D = "beta (y direction)"
NO_POINTS_TEXT = "no computed points"
MASK_GREY = "0.85"
# Guard against a typo such as vlevel=1e-6 turning into millions of contour levels.
_MAX_LEVELS = 1000


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
        hint = " (transposed? z[j, i] must be f(x[i], y[j]))" if shape == expected[::-1] else ""
        raise UserError(
            f"surface values have shape {shape}; expected (len(y), len(x)) = {expected}{hint}"
        )
    return xa, ya, mask_invalid(z, done)


def finite(value: float, name: str) -> float:
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
    linear spec gives, evenly spaced in log10 over [log10 vmin, log10 vmax). (0.1, 10, 0.5)
    thus gives 20 levels 0.1 decade apart.
    """
    lo = finite(vmin, "vmin")
    hi = finite(vmax, "vmax")
    step = finite(vlevel, "vlevel")
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


def log10_masked(zm: np.ma.MaskedArray) -> np.ma.MaskedArray:
    """log10 of the unmasked entries; non-positive values are masked too (log undefined)."""
    mask = np.ma.getmaskarray(zm) | ~(np.ma.filled(zm, np.nan) > 0)
    data = np.full(zm.shape, np.nan)
    data[~mask] = np.log10(zm.data[~mask])
    return np.ma.MaskedArray(data, mask=mask)


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
