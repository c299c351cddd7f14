"""task=plot: re-render every figure of an existing surface file; nothing is recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landscape_exp.errors import UserError
from landscape_exp.figures import render_surface
from landscape_exp.surface_file import read_surface
from landscape_exp.tasks.common import RunContext


def run(ctx: RunContext) -> dict[str, Any]:
    if not ctx.cfg.get("surf_file"):
        raise UserError("task=plot needs surf_file=<path to a surface .h5 file>")
    surface = read_surface(Path(str(ctx.cfg.surf_file)))
    figs = render_surface(surface, ctx.out_dir, ctx.container(ctx.cfg.plot))
    ctx.tracker.log_images(figs, prefix="plot/")
    print(f"wrote {len(figs)} figure files to {ctx.out_dir}")
    return {"figures": [str(f) for f in figs], "surface_file": str(surface["path"])}
