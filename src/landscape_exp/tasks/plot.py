"""task=plot: re-render every figure of an existing surface file (surf_file=), or overlay several
1D surface files with their mean and spread (plot.overlay=[a.h5,b.h5,...]); nothing is recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landscape_exp.errors import UserError
from landscape_exp.figures import figure_1d_overlay, render_surface, save, surface_title
from landscape_exp.job.context import RunContext
from landscape_exp.measures.paths import surface_barrier_annotation
from landscape_exp.surface.store import read_surface


def _overlay(files: tuple[str, ...], ctx: RunContext) -> list[Path]:
    """The 1D surfaces of ``files`` (1xN rows too) on one figure; they must share x."""
    surfaces = []
    for f in files:
        s = read_surface(Path(f))
        if s.get("y") is not None and len(s["y"]) != 1:
            raise UserError(f"plot.overlay: {f!r} is a 2D surface ({len(s['y'])} y values); the overlay takes 1D surfaces")
        s = {k: np.ravel(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}  # 1xN rows too
        if surfaces and (s["x"].shape != surfaces[0]["x"].shape or not np.allclose(s["x"], surfaces[0]["x"])):
            raise UserError(f"plot.overlay: {f!r} has other x coordinates than {files[0]!r}; overlaid surfaces share x")
        surfaces.append(s)
    fig = figure_1d_overlay(surfaces[0]["x"], surfaces, title=surface_title(surfaces[0].get("attrs", {})),
                            log=ctx.settings.plot.log, loss_max=ctx.settings.plot.loss_max)
    return save(fig, ctx.out_dir / "overlay_1d")


def run(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    files = s.plot.overlay
    if not s.surf_file and not files:
        raise UserError("task=plot needs surf_file=<path to a surface .h5 file> or plot.overlay=[a.h5,b.h5,...]")
    if len(files) == 1:
        raise UserError(f"plot.overlay={list(files)} names one file; an overlay needs 2 or more")
    summary: dict[str, Any] = {}
    figs: list[Path] = []
    if s.surf_file:
        surface = read_surface(Path(s.surf_file))
        if surface.get("layout"):
            print(f"{s.surf_file}: 2D arrays in the original tool's layout (shape (nx, ny)), read as reshape(ny, nx)")
        figs += render_surface(surface, ctx.out_dir, s.plot, barrier=surface_barrier_annotation(surface))
        summary["surface_file"] = str(surface["path"])
    if files:
        figs += _overlay(files, ctx)
        summary["overlay_files"] = list(files)
    ctx.tracker.log_images(figs, prefix="plot/")
    print(f"wrote {len(figs)} figure files to {ctx.out_dir}")
    return {"figures": [str(f) for f in figs], **summary}
