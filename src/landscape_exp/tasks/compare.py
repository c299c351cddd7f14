"""task=compare: compare the models of a sweep or study (or of a list of run directories).

``python run.py task=compare task.sweep_dir=<sweep or study dir>`` or
``python run.py task=compare 'task.runs=[<run dir>,<run dir>]'``; writes the tables and figures
of :func:`landscape_exp.compare.report.compare_runs` into this job's run directory and to the tracker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landscape_exp.compare.discover import find_runs
from landscape_exp.compare.report import compare_runs
from landscape_exp.compare.runs import METRIC_COLUMNS
from landscape_exp.compare.tables import stats_text, text_table, value_with_ci
from landscape_exp.errors import UserError
from landscape_exp.job.context import RunContext

SHOWN_MEASURES = 4  # console columns beyond the swept values and the errors; compare.md has all


def run(ctx: RunContext) -> dict[str, Any]:
    c = ctx.settings.compare
    assert c is not None
    out = ctx.out_dir
    sweep = Path(c.sweep_dir).resolve() if c.sweep_dir else None
    # a study's compare job lives in the study's directory (<study>/compare): not one of its jobs
    paths = [p for p in find_runs(c.sweep_dir, list(c.runs), exclude=[out]) if p.resolve() != out.resolve()]
    if not paths:
        raise UserError(f"the compare job's own directory {str(out)!r} is the only run found; give other runs")
    print(f"compare: {len(paths)} jobs -> {out}")
    summary = compare_runs(paths, out, metric=c.metric, plot=ctx.settings.plot, ignore=list(c.ignore), root=sweep,
                           replicates=list(c.replicates))

    rows, swept = summary["rows"], summary["swept"]
    measures = [k for k in summary["columns"] if k not in ("model", "source", "jobs", "checkpoint", *swept, *METRIC_COLUMNS)
                and not k.endswith((" ci_low", " ci_high"))]
    heights = [k for k in measures if "location" not in k]  # where a barrier is says less than how high
    shown = ["model", "test_error", "gap", *heights[:SHOWN_MEASURES], "source"]  # the model's name has the swept values
    print(f"compare: {summary['models']} models from {summary['jobs']} jobs; swept: {', '.join(swept) or 'nothing'}")
    print(text_table(shown, rows))
    if len(measures) > SHOWN_MEASURES:
        print(f"(and {len(measures) - SHOWN_MEASURES} more measures in {summary['table_md']})")
    if summary["between_rows"]:  # interpolations and curves: properties of a pair, not of a model
        pcols = [k for k in summary["between_columns"] if not k.endswith((" ci_low", " ci_high"))]
        print(f"compare: between models (not rows): {summary['between_models_csv']}")
        shown = [k for k in pcols[2:-1] if "location" not in k][:SHOWN_MEASURES]  # heights before where they are
        print(text_table(pcols[:2] + shown, summary["between_rows"]))
    if summary["replicates"]:  # seeds: each setting's mean and t-interval over them
        reps, rep_rows = summary["replicates"], summary["over_replicates_rows"]
        settings = [k for k in swept if k not in reps]
        ci = [k for k in ("test_error", "gap", *heights[:SHOWN_MEASURES - 2]) if k in summary["over_replicates_columns"]]
        print(f"compare: over {', '.join(reps)}: {len(rep_rows)} settings (mean [95% t-interval]; "
              f"{summary['over_replicates_csv']})")
        print(text_table([*settings, "n", *ci], [{**r, **{k: value_with_ci(r, k) for k in ci}} for r in rep_rows]))
        ctx.tracker.log_table("compare/over_replicates", summary["over_replicates_columns"],
                              [[r.get(k) for k in summary["over_replicates_columns"]] for r in rep_rows])
    corrs = summary["correlations"]
    computed = [x for x in corrs if x["spearman_rho"] == x["spearman_rho"]]  # not NaN
    for x in computed:
        print(f"  {x['measure']} vs {x['target']}: {stats_text(x)}")
    notes = sorted({x["note"] for x in corrs if x not in computed})
    if notes:  # one line, not one per measure: usually the same reason for all
        print(f"  no rank correlation for {len(corrs) - len(computed)} measure/target pairs: {'; '.join(notes)}")

    figs = [Path(f) for f in summary["figures"]]
    ctx.tracker.log_images([f for f in figs if f.suffix == ".png"], prefix="compare/")
    cols = summary["columns"]
    ctx.tracker.log_table("compare/table", cols, [[r.get(k) for k in cols] for r in rows])
    ccols = list(summary["correlations"][0]) if summary["correlations"] else []
    if ccols:
        ctx.tracker.log_table("compare/correlations", ccols, [[r[k] for k in ccols] for r in summary["correlations"]])
    print(f"compare: table {summary['table_md']}; figures {', '.join(str(f) for f in figs if f.suffix == '.png') or 'none'}")
    return summary

