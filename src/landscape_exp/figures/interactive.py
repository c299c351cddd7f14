"""Interactive 3D view of a 2D loss surface as one self-contained HTML file (plotly).

The file embeds plotly.js (``include_plotlyjs=True``), so it opens offline, e.g. from a
cluster's output directory copied to a laptop or from a W&B media panel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from landscape_exp.figures.base import XLABEL_2D, YLABEL_2D, surface_grid

__all__ = ["figure_surface_html", "save_html"]


def _nan_to_none(values: np.ndarray) -> list:
    """Nested lists with ``None`` for NaN: plotly leaves a hole there, and the numbers stay
    readable in the HTML (numpy arrays would be base64-encoded)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in values]


def figure_surface_html(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    title: str,
    zlabel: str,
    log: bool = False,
    done: np.ndarray | None = None,
) -> go.Figure:
    """An interactive 3D surface (plotly ``go.Surface``); :func:`save_html` writes it to one file.

    Args:
        x, y: grid coordinates, shapes (nx,) and (ny,).
        z: values, shape (ny, nx), ``z[j, i] = f(x[i], y[j])``; -1/NaN/inf become holes.
        title, zlabel: text.
        log: show log10(z) (non-positive values become holes).
        done: optional computed-points mask, see :func:`landscape_exp.figures.base.mask_invalid`.
    """
    xa, ya, masked = surface_grid(x, y, z, done)
    values = masked.filled(np.nan)
    label = zlabel
    if log:
        # Non-positive values have no log10: they become holes like masked points.
        positive = values > 0
        values = np.where(positive, np.log10(np.where(positive, values, 1.0)), np.nan)
        label = f"log10({zlabel})"
    # plotly's convention matches ours: z[j][i] sits at (x[i], y[j]).
    surface = go.Surface(
        x=xa.tolist(),
        y=ya.tolist(),
        z=_nan_to_none(values),
        colorscale="Viridis",
        colorbar={"title": {"text": label}},
        hovertemplate=f"alpha=%{{x:.4g}}<br>beta=%{{y:.4g}}<br>{label}=%{{z:.6g}}<extra></extra>",
        contours={"z": {"show": True, "usecolormap": True, "project": {"z": True}}},
    )
    fig = go.Figure(data=[surface])
    n_masked = int(np.isnan(values).sum())
    subtitle = f"<br><sup>{n_masked} of {values.size} points not computed or diverged</sup>" if n_masked else ""
    fig.update_layout(
        title={"text": f"{title}{subtitle}"},
        scene={
            "xaxis": {"title": {"text": XLABEL_2D}},
            "yaxis": {"title": {"text": YLABEL_2D}},
            "zaxis": {"title": {"text": label}},
        },
        margin={"l": 0, "r": 0, "t": 60, "b": 0},
    )
    return fig


def save_html(fig: go.Figure, path: Path | str) -> Path:
    """Write ``fig`` to ``path`` as one HTML file with plotly.js embedded (parents are created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out, include_plotlyjs=True, full_html=True, auto_open=False)
    return out
