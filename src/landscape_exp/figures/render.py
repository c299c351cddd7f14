"""Every figure of a surface file: 1D curves, 2D contour / filled contour / heat map / 3D
surface, the interactive HTML view and the ParaView VTP export."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape_exp.figures.base import save
from landscape_exp.figures.interactive import figure_surface_html, save_html
from landscape_exp.figures.lines import figure_1d
from landscape_exp.figures.surface2d import save_2d
from landscape_exp.figures.vtk import export_vtp

if TYPE_CHECKING:
    from landscape_exp.settings import PlotSettings

__all__ = ["render_surface", "surface_title"]


def surface_title(attrs: Mapping[str, Any]) -> str:
    """'<task>: <model> on <dataset>, <normalization> normalization' from a file's attributes."""
    parts = [str(attrs.get("model", "?")), "on", str(attrs.get("dataset", "?"))]
    norm = attrs.get("normalization")
    kind = attrs.get("task", "surface")
    tail = f", {norm}-normalized directions" if norm and kind in ("surface1d", "surface2d") else ""
    return f"{kind}: {' '.join(parts)}{tail}"


def render_surface(surface: Mapping[str, Any], out_dir: Path, plot: PlotSettings, stem: str = "surface") -> list[Path]:
    """Write all figures of a surface (as returned by ``read_surface``) into ``out_dir``, with
    the levels, log scale and clipping of ``plot``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = surface.get("attrs", {})
    title = surface_title(attrs)
    done = surface.get("done")
    log = bool(plot.log)
    written: list[Path] = []
    if surface.get("y") is None:
        metrics = {k: surface[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in surface}
        xlabel = "alpha (interpolation coefficient)" if attrs.get("task") == "interp1d" else "alpha"
        fig = figure_1d(surface["x"], metrics, title=title, xlabel=xlabel, log=log, loss_max=plot.loss_max, done=done)
        return save(fig, out_dir / f"{stem}_1d")
    x, y = surface["x"], surface["y"]
    for metric in ("train_loss", "test_loss", "train_acc", "test_acc"):
        if metric not in surface:
            continue
        z = surface[metric]
        is_loss = metric.endswith("loss")
        if is_loss:
            levels = dict(vmin=float(plot.vmin), vmax=float(plot.vmax), vlevel=float(plot.vlevel))
        else:  # accuracy in percent
            levels = dict(vmin=0.0, vmax=100.0, vlevel=5.0)
        label = metric.replace("_", " ") + ("" if is_loss else " (%)")
        written += save_2d(x, y, z, out_dir / f"{stem}_{metric}", title=title, zlabel=label, minimizer=(0.0, 0.0),
                           log=log and is_loss, done=done, **levels)
        if is_loss:
            html = figure_surface_html(x, y, z, title=title, zlabel=label, log=log, done=done)
            written.append(save_html(html, out_dir / f"{stem}_{metric}_3d.html"))
            written.append(export_vtp(x, y, z, out_dir / f"{stem}_{metric}.vtp", log=log, zmax=plot.zmax, done=done))
    return written
