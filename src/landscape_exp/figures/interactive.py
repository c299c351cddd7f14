"""Interactive 3D view of a 2D loss surface as an HTML file (plotly).

How the file gets plotly.js (``plot.html_plotlyjs``), never from a CDN, so results open offline:

* ``inline``: embedded in every file (self-contained, about 5 MB each), e.g. for a cluster's
  output directory copied to a laptop or a W&B media panel;
* ``directory``: one ``plotly.min.js`` written beside the HTML files (once per directory) and
  referenced by a relative ``<script src>``: a sweep stores it once per job directory; the HTML
  opens offline as long as the two files stay together (W&B's copy of such a file cannot load it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from landscape_exp.config.choices import HTML_PLOTLYJS
from landscape_exp.errors import choice_error
from landscape_exp.figures.base import XLABEL_2D, YLABEL_2D, surface_grid
from landscape_exp.io.files import atomic_path

__all__ = ["HTML_PLOTLYJS", "figure_surface_html", "save_html"]

# plot.html_plotlyjs: where the HTML view gets plotly.js from ("none": no HTML view is written).


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


def save_html(fig: go.Figure, path: Path | str, *, plotlyjs: str) -> Path:
    """Write ``fig`` to ``path`` (parents are created) with plotly.js ``inline`` (embedded) or in
    the ``directory`` (``plotly.min.js`` beside it, written when missing, atomically)."""
    if plotlyjs not in HTML_PLOTLYJS[:2]:
        raise choice_error("plot.html_plotlyjs for an HTML file", plotlyjs, HTML_PLOTLYJS[:2])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if plotlyjs == "directory":
        bundle = out.parent / "plotly.min.js"
        if not bundle.is_file():
            with atomic_path(bundle, tag="plotly") as tmp:
                Path(tmp).write_text(get_plotlyjs(), encoding="utf-8")
    fig.write_html(out, include_plotlyjs="directory" if plotlyjs == "directory" else True, full_html=True,
                   auto_open=False)
    return out
