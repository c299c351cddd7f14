"""Comparing the models of a sweep or study (:func:`compare_runs`): one row per model, swept
parameters, measures, rank correlations with test error and the generalization gap, and the
figures a paper uses. The parts: :mod:`.discover` finds the jobs, :mod:`.runs` reads one,
:mod:`.models` groups them into models and finds what was swept, :mod:`.tables` builds the tables
and statistics.

A *job* is a Hydra job directory: ``.hydra/config.yaml`` (its config) and ``summary.json``
(written by every task when it finishes), plus for the surface tasks ``surface.h5`` (or the
``surface_file`` the summary names). :func:`find_runs` finds the jobs anywhere under a sweep or
study directory: numbered (``0/``, ``1/``), named (``surface2d_bs32_wd0/``) or in stages
(``train/``, ``surfaces/``, ``interp/``). Not counted: shard jobs whose surface another job merged,
jobs without a computed point, the compare jobs themselves.

A *model* is one checkpoint, identified by its content (sha256; its path where the file is
gone): its training job, its 1D and 2D surfaces and its Hessian are one row, so correlations are
over models, not files. Interpolations, planes and curves (``interp1d``, ``plane``, ``connect``)
whose end models are all rows are *between models*: a table of their own, not rows; one whose
other end is no row (a curve to a seed+1 minimum trained for it) measures its first model.

Swept parameters are the keys of what makes a model (``model``, ``dataset``, ``optim``, ``seed``,
``eval.loss``: ``Settings.training_identity``) whose values differ across models; their values
sort as numbers (32 before 256).

Columns: train/test loss and accuracy, test error (100 - test accuracy, %), generalization gap
(test loss - train loss), every ``sharpness/*`` value, the Hessian's ``lambda_max``,
``lambda_min`` and trace, and every entry of the summary's ``measures`` (``{name: {"value",
"ci_low", "ci_high", "higher_is_sharper"}}``, the place for new measures). Where loss and
accuracy come from (the ``source`` column): the surface's centre when it holds both splits,
else the training job's final metrics, else the metrics stored in the checkpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape_exp.compare.discover import note
from landscape_exp.compare.models import (
    Model,
    checkpoint_identity,
    checkpoint_ref,
    format_value,
    group_models,
    label_models,
    override_keys,
    short_names,
    sort_key,
    swept_parameters,
)
from landscape_exp.compare.runs import (
    IGNORE_DEFAULT,
    METRIC_COLUMNS,
    METRICS,
    NOT_CORRELATED,
    PAIR_TASKS,
    TARGETS,
    Run,
    empty_reason,
    load_run,
    run_names,
)
from landscape_exp.compare.tables import (
    CI_SUFFIXES,
    MIN_N,
    comparison_table,
    markdown_table,
    over_replicates,
    pair_table,
    rank_correlations,
    replicate_keys,
    stats_text,
    write_csv,
)
from landscape_exp.errors import UserError
from landscape_exp.io.files import atomic_path

if TYPE_CHECKING:
    from landscape_exp.config.sections import PlotSettings

PAGE = 12  # panels per figure: more make a page too tall to read (a curve study has ~70 measures)


def _pages(items: Sequence[str]) -> list[list[str]]:
    return [list(items[i:i + PAGE]) for i in range(0, len(items), PAGE)]


def _page_suffix(i: int) -> str:
    return "" if i == 0 else f"_{i + 1}"


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, metric: str = "train_loss",
                 plot: PlotSettings | None = None, ignore: Sequence[str] = IGNORE_DEFAULT,
                 root: str | Path | None = None, min_n: int = MIN_N, replicates: Sequence[str] = ("seed",)
                 ) -> dict[str, Any]:
    """Compare the models of the jobs in ``run_dirs`` and write tables and (with ``plot``) figures
    into ``out_dir``; ``root`` (the sweep directory) shortens the job names in the table.
    ``replicates``: swept keys whose models are repeats of one setting (seeds): with any swept,
    a table over them (:func:`over_replicates`: mean, sd, t-interval per setting), and the
    figures against the other swept parameters draw those means and intervals.

    Returns a summary: ``models``, ``jobs``, ``swept``, the written files, the table's
    ``columns``/``rows``, the ``correlations`` and ``spearman/<measure>/<target>`` values.
    """
    from landscape_exp.figures import compare as F
    from landscape_exp.figures.base import save
    from landscape_exp.figures.levels import LevelSpec

    if not run_dirs:
        raise UserError("no runs to compare")
    if metric not in METRICS:
        raise UserError(f"unknown compare metric {metric!r}; allowed: {', '.join(METRICS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(str(p)) for p in run_dirs]
    runs, seen_surfaces = [], set()
    for p, n in zip(paths, run_names(paths)):
        r = load_run(p, n, ignore)
        why = empty_reason(r)
        surf = str(Path(r.surface["path"]).resolve()) if r.surface is not None else None
        if why:
            note(f"skipping {str(p)!r}: {why}")
        elif surf is not None and surf in seen_surfaces:
            note(f"skipping {str(p)!r}: its surface {surf!r} is another job's, counted once")
        else:
            runs.append(r)
            seen_surfaces.add(surf)
    if not runs:
        raise UserError(f"none of the {len(paths)} jobs has anything to compare")
    base = [r for r in runs if r.task not in PAIR_TASKS]
    hashes: dict[str, str] = {}  # each checkpoint hashed once for grouping, pairing and labelling
    pairs, attached = _between([r for r in runs if r.task in PAIR_TASKS], base, hashes)
    models = group_models(base + attached, hashes)
    order = [k for m in models for r in m.runs for k in override_keys(r.path)]
    swept = swept_parameters([m.config for m in models], ignore, order)
    models.sort(key=lambda m: [sort_key(m.config.get(k)) for k in swept])
    label_models(models, swept)
    columns, rows, measures = comparison_table(models, swept, Path(str(root)) if root else None)
    corr_measures = [c for c in measures if not c.startswith(NOT_CORRELATED) and "location" not in c]  # flags, places
    corr = [c for t in TARGETS for c in rank_correlations(rows, corr_measures, t, min_n)]

    table_csv = write_csv(out / "compare.csv", columns, rows)
    corr_cols = ["measure", "target", "n", "spearman_rho", "spearman_p", "kendall_tau", "kendall_p", "note"]
    corr_csv = write_csv(out / "correlations.csv", corr_cols, corr)
    md = [f"# Comparison of {len(models)} models ({len(runs)} jobs)\n",
          f"Swept: {', '.join(swept) or 'nothing (the models differ only by checkpoint)'}.\n",
          markdown_table([c for c in columns if c != "checkpoint"], rows),
          "\ntest_error: 100 - test accuracy (%); gap: test loss - train loss; source: where loss and accuracy come "
          "from; `value [lo, hi]`: a measure's confidence interval.\n",
          "\n## Rank correlations with test error and the generalization gap (over models)\n",
          markdown_table(corr_cols, corr)]
    pair_labels = _pair_labels([r for r in runs if r.task in PAIR_TASKS], models, hashes)
    pair_csv, pcols, prows = None, [], []
    if pairs:
        pcols, prows = pair_table(pairs, pair_labels, Path(str(root)) if root else None)
        pair_csv = write_csv(out / "between_models.csv", pcols, prows)
        md += ["\n## Between models (interpolations, planes, curves: not rows, not in the correlations)\n",
               markdown_table(pcols, prows)]
    reps = replicate_keys(swept, replicates)
    settings = [k for k in swept if k not in reps]
    rep_cols: list[str] = []
    rep_rows: list[dict[str, Any]] = []
    rep_csv = None
    if reps:
        values = [*METRIC_COLUMNS, *measures]
        rep_rows = over_replicates(rows, settings, values)
        rep_cols = [*settings, "n", *[c for k in values for c in (k, f"{k} sd", f"{k} n", *(k + x for x in CI_SUFFIXES))]]
        rep_csv = write_csv(out / "compare_over_replicates.csv", rep_cols, rep_rows)
        md += [f"\n## Over {', '.join(reps)}: one row per setting\n",
               f"n: models of the setting. Each value is the mean over them, `[lo, hi]` the 95% Student-t interval "
               f"of the mean (from their spread; none below two). Standard deviations and per-value counts: "
               f"`{rep_csv.name}`.\n",
               markdown_table([*settings, "n", *(v for v in values if v not in ("train_acc", "test_acc"))], rep_rows)]
    table_md = out / "compare.md"
    with atomic_path(table_md) as tmp:
        tmp.write_text("\n".join(md))

    figures: list[Path] = []
    if plot is not None:
        short = short_names(swept)
        # over replicates: each setting's mean and t-interval against the other swept parameters
        drawn, against = (rep_rows, settings) if reps else (rows, swept)
        note_ = ""
        if reps:
            ns = sorted({r["n"] for r in rep_rows})
            each = f"n={ns[0]} per setting" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]} per setting, in compare.md"
            note_ = f"mean over {', '.join(reps)} ({each}), 95% t-interval of the mean"
        for k in against:
            others = [o for o in against if o != k]
            lines = [", ".join(f"{short[o]}={format_value(r.get(o))}" for o in others) for r in drawn]
            for i, page in enumerate(_pages(["test_error", "gap", *corr_measures])):
                fig = F.figure_measures_vs_parameter(drawn, k, page, lines=lines, name=short[k],
                                                     line_name=" and ".join(short[o] for o in others), note=note_)
                figures += save(fig, out / _file_name(f"measures_vs_{short[k]}{_page_suffix(i)}"))
        by = {(c["measure"], c["target"]): c for c in corr}
        for t in TARGETS:
            for i, page in enumerate(_pages(corr_measures)):
                fig = F.figure_measures_vs_target(rows, t, page, {m: stats_text(by[(m, t)]) for m in page},
                                                  labels=[r["model"] for r in rows])
                figures += save(fig, out / f"measures_vs_{t}{_page_suffix(i)}")
        model_of = {id(r): m.label for m in models for r in m.runs}
        place = {id(r): i for i, m in enumerate(models) for r in m.runs}  # curves and panels in the table's order
        runs = sorted(runs, key=lambda r: place.get(id(r), len(place)))
        for task in ("surface1d", "interp1d"):
            group = [r for r in runs if r.task == task and r.surface is not None and r.surface.get("y") is None]
            if group:
                labels = [pair_labels.get(id(r)) or model_of[id(r)] for r in group]
                fig = F.figure_overlay_1d(group, metric=metric, labels=labels, log=bool(plot.log), loss_max=plot.loss_max,
                                          title=f"{task}: {len(group)} {'models' if task == 'surface1d' else 'interpolations'}")
                figures += save(fig, out / ("compare_1d" if task == "surface1d" else "compare_interp1d"))
        two_d = [r for r in runs if r.surface is not None and r.surface.get("y") is not None and r.task not in PAIR_TASKS]
        if two_d:
            fig = F.figure_contour_grid(two_d, metric=metric, labels=[model_of.get(id(r), r.name) for r in two_d],
                                        levels=LevelSpec.from_plot(plot), log=bool(plot.log))
            figures += save(fig, out / "compare_2d")

    summary: dict[str, Any] = {
        "models": len(models), "jobs": len(runs), "run_dirs": [str(r.path) for m in models for r in m.runs] + [
            str(r.path) for r in pairs], "swept": swept,
        "between_models": [str(r.path) for r in pairs], "between_models_csv": str(pair_csv) if pair_csv else None,
        "between_columns": pcols, "between_rows": prows,
        "table_csv": str(table_csv), "table_md": str(table_md),
        "correlations_csv": str(corr_csv), "figures": [str(f) for f in figures], "columns": columns,
        "rows": rows, "correlations": corr, "replicates": reps,
        "over_replicates_csv": str(rep_csv) if rep_csv else None, "over_replicates_columns": rep_cols,
        "over_replicates_rows": rep_rows,
    }
    summary.update({f"spearman/{c['measure']}/{c['target']}": c["spearman_rho"] for c in corr})
    return summary


def _ends(run: Run) -> list[str | None]:
    """The checkpoints a job between models joins, as the job resolved them (``checkpoint1/2`` of a
    curve's summary, the surface's ``direction_info``); the config's text may hold
    ``${oc.env:...}`` that resolves differently now."""
    if run.summary.get("checkpoint1"):
        return [str(run.summary["checkpoint1"]), run.summary.get("checkpoint2")]
    info = (run.surface or {}).get("attrs", {}).get("direction_info")
    try:
        info = json.loads(info) if isinstance(info, str) else info
    except ValueError:
        info = None
    info = info if isinstance(info, Mapping) else {}
    others = [info.get(k) or run.config.get(f"direction.{k}") for k in ("model2", "model3")]
    return [checkpoint_ref(run)[0], *[str(o) for o in others if o]]


def _between(runs: Sequence[Run], base: Sequence[Run], cache: dict[str, str]) -> tuple[list[Run], list[Run]]:
    """``(between, attached)``: jobs whose end models are all rows are between models; one whose
    other end is no row (a curve to a seed+1 minimum trained for it) measures its first model."""
    rows = {checkpoint_identity(*checkpoint_ref(r), cache) for r in base}
    between, attached = [], []
    for r in runs:
        ends = [checkpoint_identity(e, None, cache) for e in _ends(r)]
        (between if len(ends) > 1 and all(e in rows for e in ends) else attached).append(r)
    return between, attached


def _short_checkpoint(path: str | None) -> str:
    p = Path(str(path))
    return p.parent.parent.name if p.parent.name == "checkpoints" else p.name  # <run>/checkpoints/final.pt


def _pair_labels(pairs: Sequence[Run], models: Sequence[Model], cache: dict[str, str]) -> dict[int, str]:
    """Jobs between models named by their ends: ``batch_size=32 -> batch_size=256``, or the
    checkpoint's run directory where an end is no row."""
    label = {m.key: m.label for m in models}
    out = {}
    for r in pairs:
        ends = _ends(r)
        out[id(r)] = " -> ".join(label.get(checkpoint_identity(e, None, cache) or "", _short_checkpoint(e)) for e in ends)
    return out
