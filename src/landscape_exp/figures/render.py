"""Every figure of a surface file: 1D curves, 2D contour / filled contour / heat map / 3D
surface, the interactive HTML view and the ParaView VTP export."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_exp.figures.base import save
from landscape_exp.figures.interactive import figure_surface_html, save_html
from landscape_exp.figures.levels import LevelSpec
from landscape_exp.figures.lines import figure_1d
from landscape_exp.figures.surface2d import save_2d
from landscape_exp.figures.vtk import export_vtp

if TYPE_CHECKING:
    from landscape_exp.config.sections import PlotSettings

__all__ = ["anchors_of", "render_surface", "surface_title"]


def surface_title(attrs: Mapping[str, Any]) -> str:
    """'<task>: <model> on <dataset>, <normalization> normalization' from a file's attributes."""
    parts = [str(attrs.get("model", "?")), "on", str(attrs.get("dataset", "?"))]
    norm = attrs.get("normalization")
    kind = attrs.get("task", "surface")
    tail = f", {norm}-normalized directions" if norm and kind in ("surface1d", "surface2d") else ""
    return f"{kind}: {' '.join(parts)}{tail}"


def anchors_of(task: str, ndim: int) -> dict[str, Any] | None:
    """The models a surface of ``task`` is spanned by, named: the plane's theta1 at (0,0),
    theta2 at (1,0), theta3 at (0,1); an interpolation's model 1 at alpha=0 and model 2 at 1."""
    if task == "plane":
        points = {"theta1": (0.0, 0.0), "theta2": (1.0, 0.0), "theta3": (0.0, 1.0)}
        return points if ndim == 2 else {k: v[0] for k, v in list(points.items())[:2]}
    if task == "interp1d":
        return {"model 1": 0.0, "model 2": 1.0}
    return None


def render_surface(surface: Mapping[str, Any], out_dir: Path, plot: PlotSettings, stem: str = "surface",
                   barrier: Mapping[str, float] | None = None) -> list[Path]:
    """Write all figures of a surface (as returned by ``read_surface``) into ``out_dir``, with
    the levels, log scale, clipping, VTP upsampling and HTML mode of ``plot``. A 2D surface with
    one y value (a 1xN grid) is drawn as a 1D curve; ``barrier`` (an interpolation's, from
    ``landscape_exp.measures.paths.surface_barrier_annotation``) is marked on it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = surface.get("attrs", {})
    title = surface_title(attrs)
    task = str(attrs.get("task", ""))
    done = surface.get("done")
    log = bool(plot.log)
    y = surface.get("y")
    metrics = {k: surface[k] for k in ("train_loss", "test_loss", "train_acc", "test_acc") if k in surface}
    if y is None or len(y) == 1:
        xlabel = "alpha (interpolation coefficient)" if task == "interp1d" else "alpha"
        if y is not None:  # 1xN: the row at the one y value
            metrics = {k: np.ravel(v) for k, v in metrics.items()}
            done = None if done is None else np.ravel(done)
            xlabel += f" (beta = {float(y[0]):g})"
        fig = figure_1d(surface["x"], metrics, title=title, xlabel=xlabel, log=log, loss_max=plot.loss_max, done=done,
                        anchors=anchors_of(task, 1) if y is None or float(y[0]) == 0.0 else None, barrier=barrier)
        return save(fig, out_dir / f"{stem}_1d")
    x = surface["x"]
    spec = LevelSpec.from_plot(plot)
    plane = anchors_of(task, 2)
    written: list[Path] = []
    for metric, z in metrics.items():
        is_loss = metric.endswith("loss")
        label = metric.replace("_", " ") + ("" if is_loss else " (%)")
        written += save_2d(x, y, z, out_dir / f"{stem}_{metric}", title=title, zlabel=label,
                           levels=spec if is_loss else spec.for_percent(), minimizer=None if plane else (0.0, 0.0),
                           anchors=plane, log=log and is_loss, done=done)
        if is_loss:
            if plot.html_plotlyjs != "none":
                html = figure_surface_html(x, y, z, title=title, zlabel=label, log=log, done=done)
                written.append(save_html(html, out_dir / f"{stem}_{metric}_3d.html", plotlyjs=plot.html_plotlyjs))
            written.append(export_vtp(x, y, z, out_dir / f"{stem}_{metric}.vtp", log=log, zmax=plot.zmax, done=done,
                                      interp=plot.vtp_interp))
    return written
