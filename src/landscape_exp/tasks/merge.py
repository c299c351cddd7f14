"""task=merge: assemble a sharded surface from its shard files, then summarize and draw it.

``python run.py task=merge surf_file=<final surface.h5>`` reads the shard files next to it
(``surface.shard-0000-of-0004.h5``, ... as written by ``shard.count=N shard.index=i``) and writes
the surface file. The last shard to finish already does this on its own; this task is for when
it could not (a shard finished after being rerun by hand, shards computed on different machines
and copied together, a merge interrupted). Merging is idempotent: points already in the surface
file are kept, and a shard that is missing or still has points to compute is named in a one-line
error, nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landscape_exp.errors import UserError
from landscape_exp.figures import render_surface
from landscape_exp.job.context import RunContext
from landscape_exp.measures.paths import surface_barrier_annotation
from landscape_exp.surface.job import publish
from landscape_exp.surface.sharding import merge_shards, shard_count
from landscape_exp.surface.store import grid_of, read_surface
from landscape_exp.surface.summary import summarize


def run(ctx: RunContext) -> dict[str, Any]:
    """Merge the shards of ``surf_file`` (count from ``shard.count`` or the files), then
    summarize it like the surface tasks do and draw its figures into the run directory."""
    s = ctx.settings
    if not s.surf_file:
        raise UserError(
            "task=merge needs surf_file=<surface file the shards belong to>, e.g. "
            "surf_file=<sweep dir>/surface.h5 for a multirun over shard.index"
        )
    surf_path = Path(s.surf_file)
    count = shard_count(surf_path, s.shard.count)
    # raises, naming the missing/incomplete shard, before writing anything; a corrupt surface file
    # is moved aside (kept) with surface_recover=true
    merge_shards(surf_path, count, move_corrupt_aside=s.surface_recover)
    surface = read_surface(surf_path)
    grid = grid_of(surface)
    task = str(surface["attrs"].get("task", "merge"))
    print(f"merged {count} shards into {surf_path} ({grid.size} points)")
    summary = summarize(surface, grid)
    summary.update({"surface_file": str(surf_path), "shard_count": count, "surface_task": task})
    figs = render_surface(surface, ctx.out_dir, s.plot, barrier=surface_barrier_annotation(surface)) if s.plot.enabled else []
    figures = publish(ctx, task, figs, [surf_path], f"{task}-surface")
    if figures:
        summary["figures"] = figures
    return summary
