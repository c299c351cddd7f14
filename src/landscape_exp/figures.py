"""Every figure of a surface file: 1D curves, 2D contour / filled contour / heat map / 3D
surface, the interactive HTML view and the ParaView VTP export."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from landscape_exp.interactive import write_surface_html
from landscape_exp.plotting import plot_1d, plot_2d
from landscape_exp.vtk_export import export_vtp


def surface_title(attrs: Mapping[str, Any]) -> str:
    """'<task>: <model> on <dataset>, <normalization> normalization' from a file's attributes."""
    parts = [str(attrs.get("model", "?")), "on", str(attrs.get("dataset", "?"))]
    norm = attrs.get("normalization")
    kind = attrs.get("task", "surface")
    tail = f", {norm}-normalized directions" if norm and kind in ("surface1d", "surface2d") else ""
    return f"{kind}: {' '.join(parts)}{tail}"


def render_surface(surface: Mapping[str, Any], out_dir: Path, plot_cfg: Mapping[str, Any], stem: str = "surface") -> list[Path]:
    """Write all figures of a surface (as returned by ``read_surface``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = surface.get("attrs", {})
    title = surface_title(attrs)
    done = surface.get("done")
    log = bool(plot_cfg.get("log", False))
    written: list[Path] = []
    if surface.get("y") is None:
        metrics = {k: surface[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in surface}
        xlabel = "alpha (interpolation coefficient)" if attrs.get("task") == "interp1d" else "alpha"
        written += plot_1d(surface["x"], metrics, out_dir / f"{stem}_1d", title=title, xlabel=xlabel, log=log,
                           loss_max=plot_cfg.get("loss_max"), done=done)
        return written
    x, y = surface["x"], surface["y"]
    minimizer = (0.0, 0.0)
    for metric in ("train_loss", "test_loss", "train_acc", "test_acc"):
        if metric not in surface:
            continue
        z = surface[metric]
        is_loss = metric.endswith("loss")
        if is_loss:
            levels = dict(vmin=float(plot_cfg.get("vmin", 0.1)), vmax=float(plot_cfg.get("vmax", 10)),
                          vlevel=float(plot_cfg.get("vlevel", 0.5)))
        else:  # accuracy in percent
            levels = dict(vmin=0.0, vmax=100.0, vlevel=5.0)
        label = metric.replace("_", " ") + ("" if is_loss else " (%)")
        written += plot_2d(x, y, z, out_dir / f"{stem}_{metric}", title=title, zlabel=label, minimizer=minimizer,
                           log=log and is_loss, done=done, **levels)
        if is_loss:
            written.append(write_surface_html(x, y, z, out_dir / f"{stem}_{metric}_3d.html", title=title,
                                              zlabel=label, log=log, done=done))
            written.append(export_vtp(x, y, z, out_dir / f"{stem}_{metric}.vtp", log=log,
                                      zmax=plot_cfg.get("zmax"), done=done))
    return written
