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

import re
from pathlib import Path
from typing import Any

import h5py

from landscape_exp.errors import UserError
from landscape_exp.figures import render_surface
from landscape_exp.sharding import check_shard, merge_shards, shard_path
from landscape_exp.surface_file import read_grid, read_surface
from landscape_exp.tasks.common import RunContext
from landscape_exp.tasks.surfaces import summarize  # the same summary as the surface tasks

# `<stem>.shard-<index>-of-<count><suffix>`, as written by sharding.shard_path
_SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)(?P<suffix>(\.[^.]*)?)$")


def shard_files(surface_path: str | Path) -> dict[int, list[int]]:
    """Shard files lying next to ``surface_path``: ``{count: sorted indices present}``."""
    surface_path = Path(surface_path)
    found: dict[int, set[int]] = {}
    if not surface_path.parent.is_dir():
        return {}
    for p in surface_path.parent.iterdir():
        m = _SHARD_NAME.match(p.name)
        if m is None or m["stem"] != surface_path.stem or m["suffix"] != surface_path.suffix or not p.is_file():
            continue
        count, index = int(m["count"]), int(m["index"])
        if shard_path(surface_path, count, index).name == p.name:  # exactly our zero-padded form
            found.setdefault(count, set()).add(index)
    return {c: sorted(i) for c, i in sorted(found.items())}


def shard_count(surface_path: str | Path, configured: int = 1) -> int:
    """How many shards make up ``surface_path``: ``shard.count`` when it is given (> 1), else
    read from the shard files' names; a one-line UserError when that is impossible or ambiguous."""
    if configured > 1:
        check_shard(configured, 0)
        return configured
    if configured < 1:
        raise UserError(f"bad shard.count={configured}; need shard.count >= 1 (1: read it from the shard files' names)")
    found = shard_files(surface_path)
    if not found:
        raise UserError(
            f"no shard files next to {str(surface_path)!r} (looked for "
            f"{Path(surface_path).stem}.shard-<i>-of-<N>{Path(surface_path).suffix}); run the shards "
            f"first (shard.count=N shard.index=i) or point surf_file at the surface they belong to"
        )
    if len(found) > 1:
        splits = ", ".join(f"{c} ({len(i)} files)" for c, i in found.items())
        raise UserError(f"shard files of several splits next to {str(surface_path)!r}: counts {splits}; choose one with shard.count=N")
    return next(iter(found))


def run(ctx: RunContext) -> dict[str, Any]:
    """Merge the shards of ``surf_file`` (count from ``shard.count`` or the files), then
    summarize it like the surface tasks do and draw its figures into the run directory."""
    if not ctx.cfg.get("surf_file"):
        raise UserError(
            "task=merge needs surf_file=<surface file the shards belong to>, e.g. "
            "surf_file=<sweep dir>/surface.h5 for a multirun over shard.index"
        )
    surf_path = Path(str(ctx.cfg.surf_file))
    count = shard_count(surf_path, int((ctx.cfg.get("shard") or {}).get("count", 1)))
    recover = bool(ctx.cfg.get("surface_recover", False))  # a corrupt surface file is moved aside, kept
    merge_shards(surf_path, count, move_corrupt_aside=recover)  # raises, naming the missing/incomplete shard, before writing anything
    surface = read_surface(surf_path)
    with h5py.File(surf_path, "r") as f:
        grid = read_grid(f)
    task = str(surface["attrs"].get("task", "merge"))
    print(f"merged {count} shards into {surf_path} ({grid.size} points)")
    summary = summarize(surface, grid, task)
    summary.update({"surface_file": str(surf_path), "shard_count": count, "surface_task": task})
    if ctx.cfg.plot.enabled:
        figs = render_surface(surface, ctx.out_dir, ctx.container(ctx.cfg.plot))
        ctx.tracker.log_images(figs, prefix=f"{task}/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.artifact([surf_path], name=f"{task}-surface", kind="surface")
    return summary
