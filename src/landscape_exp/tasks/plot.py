"""task=plot: re-render every figure of an existing surface file; nothing is recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landscape_exp.context import RunContext
from landscape_exp.errors import UserError
from landscape_exp.figures import render_surface
from landscape_exp.surface.store import read_surface


def run(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    if not s.surf_file:
        raise UserError("task=plot needs surf_file=<path to a surface .h5 file>")
    surface = read_surface(Path(s.surf_file))
    figs = render_surface(surface, ctx.out_dir, s.plot)
    ctx.tracker.log_images(figs, prefix="plot/")
    print(f"wrote {len(figs)} figure files to {ctx.out_dir}")
    return {"figures": [str(f) for f in figs], "surface_file": str(surface["path"])}
