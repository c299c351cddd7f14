"""task=compare: compare finished runs (a multirun directory or a list of run directories).

``python run.py task=compare task.sweep_dir=<multirun dir>`` or
``python run.py task=compare 'task.runs=[<run dir>,<run dir>]'``; writes the figures and tables
of :func:`landscape_exp.compare.compare_runs` into this job's run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landscape_exp.compare import compare_runs, find_runs
from landscape_exp.context import RunContext
from landscape_exp.errors import UserError


def run(ctx: RunContext) -> dict[str, Any]:
    c = ctx.settings.compare
    assert c is not None
    paths = find_runs(c.sweep_dir, list(c.runs))
    out = ctx.out_dir
    if any(Path(p).resolve() == out.resolve() for p in paths):
        raise UserError(f"the compare job's own directory {str(out)!r} cannot be one of the runs it compares")
    print(f"compare: {len(paths)} runs -> {out}")
    summary = compare_runs(paths, out, metric=c.metric, plot=ctx.settings.plot, ignore=list(c.ignore))
    figs = [Path(f) for f in summary["figures"]]
    ctx.tracker.log_images(figs, prefix="compare/")
    cols = summary["columns"]
    ctx.tracker.log_table("compare/table", cols, [[r.get(c) for c in cols] for r in summary["rows"]])
    print(f"compare: table {summary['table_md']}; figures {', '.join(str(f) for f in figs if f.suffix == '.png') or 'none'}")
    return summary
