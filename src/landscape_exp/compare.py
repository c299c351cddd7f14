"""Comparing runs: config differences, test error, generalization gap, sharpness, figures.

A run is a Hydra run directory: ``.hydra/config.yaml`` (the job's config), ``summary.json``
(written by every task) and, for the surface tasks, ``surface.h5`` (or the ``surface_file`` the
summary names). A multirun directory holds one such run per numbered subdirectory.

What a comparison writes (:func:`compare_runs`; the figures are drawn by :mod:`landscape_exp.figures.compare`):

* ``compare_1d.png/.pdf``: the runs' 1D curves overlaid (loss, and accuracy where present);
* ``compare_2d.png/.pdf``: a grid of the runs' 2D contours on one shared colour scale (the
  ``plot`` config's ``vmin``/``vmax``/``vlevel``/``log``, as in the single-run figures);
* ``compare.csv`` and ``compare.md``: one row per run with the config keys that differ across
  runs, train/test loss and accuracy, test error (100 - test accuracy, %), generalization gap
  (test loss - train loss) and every sharpness metric;
* ``correlations.csv`` (also in ``compare.md``): Spearman's rank correlation between each
  sharpness metric and the generalization gap over the runs (NaN with fewer than 3 runs).

Where the numbers come from: train/test loss and accuracy at the surface's centre when the
surface was evaluated on both splits (``eval.splits=[train,test]``); otherwise the training
task's final metrics (``final/*`` in its summary); otherwise the metrics stored in the analysed
checkpoint. The ``source`` column says which. Sharpness metrics are the ``sharpness/*`` values
of the run's summary (also stored in the surface file's ``sharpness`` attribute) and any
Hessian ``lambda_max``/``trace`` values in the summary.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_exp.errors import UserError
from landscape_exp.settings import read_run_config
from landscape_exp.figures.base import LevelSpec, save
from landscape_exp.figures.compare import figure_contour_grid, figure_overlay_1d
from landscape_exp.surface.store import read_sharpness
from landscape_exp.storage import atomic_path

if TYPE_CHECKING:
    from landscape_exp.settings import PlotSettings

IGNORE_DEFAULT: tuple[str, ...] = ("paths", "hydra", "logger", "progress")
METRICS: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc")  # drawable surface metrics
METRIC_COLUMNS: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc", "test_error", "gap")
# Summary keys that are sharpness measures (besides sharpness/*): the Hessian task's results.
HESSIAN_HINTS: tuple[str, ...] = ("lambda_max", "trace")
# Not sharpness measures themselves: left out of the rank correlations.
NOT_CORRELATED: tuple[str, ...] = ("sharpness/base_loss", "sharpness/basin_open")


@dataclass
class Run:
    """One run directory, read: its flattened config, summary, surface and metrics."""

    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    surface: dict[str, Any] | None
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Finding and reading runs
# ------------------------------------------------------------------------------------------------
def _is_run(p: Path) -> bool:
    return (p / "summary.json").is_file() or (p / ".hydra" / "config.yaml").is_file()


def find_runs(sweep_dir: str | Path | None = None, runs: Sequence[str | Path] | None = None) -> list[Path]:
    """Run directories: every numbered subdirectory of ``sweep_dir`` (in numeric order) and/or
    the directories in ``runs``. A numbered job without ``summary.json`` (failed or still
    running) is skipped with a warning; a listed run without it is a UserError."""
    out: list[Path] = []
    if sweep_dir is None and not runs:
        raise UserError("nothing to compare: give task.sweep_dir=<multirun dir> or task.runs=[<run dir>,...]")
    if sweep_dir is not None:
        sd = Path(str(sweep_dir)).expanduser()
        if not sd.is_dir():
            raise UserError(f"task.sweep_dir {str(sd)!r} is not a directory")
        jobs = sorted((p for p in sd.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        if not jobs:
            raise UserError(f"task.sweep_dir {str(sd)!r} has no numbered job directories (0, 1, ...); is it a multirun directory?")
        for p in jobs:
            if (p / "summary.json").is_file():
                out.append(p)
            else:
                msg = f"skipping {str(p)!r}: no summary.json (the job failed or has not finished)"
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                print(f"warning: {msg}")
    for r in runs or []:
        p = Path(str(r)).expanduser()
        if not p.is_dir():
            raise UserError(f"run directory {str(p)!r} does not exist")
        if not (p / "summary.json").is_file():
            raise UserError(f"run directory {str(p)!r} has no summary.json; give finished run directories")
        out.append(p)
    seen: set[Path] = set()
    unique = [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]
    if not unique:
        raise UserError("no finished runs to compare")
    return unique


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in ignore)


def load_run_config(run_dir: str | Path, ignore: Sequence[str] = IGNORE_DEFAULT) -> dict[str, Any]:
    """The run's ``.hydra/config.yaml`` flattened to dotted keys, minus the ``ignore``d ones
    (``{}`` without the file; interpolations resolved as :func:`settings.read_run_config` does)."""
    cfg = read_run_config(run_dir)
    if cfg is None:
        return {}
    return {k: v for k, v in flatten_config(cfg).items() if not _ignored(k, ignore)}


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def config_differences(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys (in first-seen order) whose values are not the same in every config (a key missing
    from some config counts as different)."""
    keys: dict[str, None] = {}
    for c in configs:
        keys.update(dict.fromkeys(c))
    return [k for k in keys if len({_key(c[k]) if k in c else "<missing>" for c in configs}) > 1]


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _checkpoint_metrics(summary: Mapping[str, Any], surface: Mapping[str, Any] | None) -> dict[str, Any]:
    from landscape_exp.checkpoint import load_checkpoint

    path = (surface or {}).get("attrs", {}).get("checkpoint") or summary.get("final_checkpoint")
    if not path or not Path(str(path)).is_file():
        return {}
    try:
        return dict(load_checkpoint(path).get("metrics") or {})
    except UserError as e:
        warnings.warn(f"checkpoint metrics unavailable: {e}", RuntimeWarning, stacklevel=2)
        return {}


def run_metrics(summary: Mapping[str, Any], surface: Mapping[str, Any] | None = None,
                checkpoint_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Loss/accuracy, test error, generalization gap, their ``source`` and the sharpness metrics.

    All four of train/test loss/accuracy come from one source, so the gap is never a mix: the
    surface's centre if it holds both splits, else the training summary (``final/*``), else
    ``checkpoint_metrics`` (the analysed checkpoint's stored metrics).
    """
    out: dict[str, Any] = {}
    names = ("train_loss", "test_loss", "train_acc", "test_acc")
    if "train_loss/centre" in summary and "test_loss/centre" in summary:
        src, vals = "surface centre", {k: summary.get(f"{k}/centre") for k in names}
    elif "final/train_loss" in summary and "final/test_loss" in summary:
        src, vals = "training", {k: summary.get(f"final/{k}") for k in names}
    elif checkpoint_metrics and "train_loss" in checkpoint_metrics and "test_loss" in checkpoint_metrics:
        src, vals = "checkpoint", {k: checkpoint_metrics.get(k) for k in names}
    else:
        src, vals = "none", {}
    for k in names:
        out[k] = _num(vals.get(k))
    out["test_error"] = 100.0 - out["test_acc"]
    out["gap"] = out["test_loss"] - out["train_loss"]
    out["source"] = src
    sharp = dict(read_sharpness(surface)) if surface is not None else {}
    for k, v in summary.items():
        if k.startswith("sharpness/") or any(h in k for h in HESSIAN_HINTS):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                sharp[k] = float(v)
    out.update(sorted(sharp.items()))
    return out


def _surface_path(run_dir: Path, summary: Mapping[str, Any]) -> Path | None:
    named = summary.get("surface_file")
    for p in ([Path(str(named))] if named else []) + [run_dir / "surface.h5"]:
        if p.is_file():
            return p
    return None


def load_run(run_dir: str | Path, name: str | None = None, ignore: Sequence[str] = IGNORE_DEFAULT) -> Run:
    """Read one run directory (see the module docstring)."""
    from landscape_exp.surface.store import read_surface

    p = Path(run_dir)
    sp = p / "summary.json"
    try:
        summary = json.loads(sp.read_text())
    except FileNotFoundError:
        raise UserError(f"run directory {str(p)!r} has no summary.json") from None
    except ValueError as e:
        raise UserError(f"{str(sp)!r} is not valid JSON ({e})") from None
    surf_path = _surface_path(p, summary)
    surface = read_surface(surf_path) if surf_path is not None else None
    ckpt = None if ("test_loss/centre" in summary or "final/test_loss" in summary) else _checkpoint_metrics(summary, surface)
    config = load_run_config(p, ignore)
    if isinstance(summary.get("model_config"), Mapping) and not _ignored("model", ignore):
        # the run analysed a checkpoint's model, not the model= its config names
        config = {k: v for k, v in config.items() if not k.startswith("model.")}
        config.update(flatten_config({"model": summary["model_config"]}))
    return Run(path=p, name=name or p.name, config=config, summary=summary, surface=surface,
               metrics=run_metrics(summary, surface, ckpt))


def run_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the directory name, with as many parents as it takes to be unique."""
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max(len(x) for x in parts) + 1):
        names = ["/".join(x[-depth:]) for x in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------
def sharpness_columns(runs: Sequence[Run]) -> list[str]:
    """Every sharpness metric present in any run, sorted."""
    keys: set[str] = set()
    for r in runs:
        keys.update(k for k in r.metrics if k.startswith("sharpness/") or any(h in k for h in HESSIAN_HINTS))
    return sorted(keys)


def rank_correlations(table: Sequence[Mapping[str, Any]], metrics: Sequence[str], target: str = "gap",
                      min_runs: int = 3) -> list[dict[str, Any]]:
    """Spearman's rho (and p-value) between each metric and ``target`` over the rows where both
    are finite; NaN with fewer than ``min_runs`` such rows or a constant column."""
    from scipy.stats import spearmanr

    out = []
    for m in metrics:
        pairs = [(_num(r.get(m)), _num(r.get(target))) for r in table]
        pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
        rho = p = math.nan
        if len(pairs) >= min_runs:
            a, b = np.array(pairs).T
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                res = spearmanr(a, b)
                rho, p = float(res.statistic), float(res.pvalue)
        out.append({"metric": m, "spearman_rho": rho, "p_value": p, "runs": len(pairs)})
    return out


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def comparison_table(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """``(columns, rows, differing config keys)``: one row per run."""
    diffs = config_differences([r.config for r in runs])
    sharp = sharpness_columns(runs)
    columns = ["run", *diffs, *METRIC_COLUMNS, *sharp, "source", "path"]
    rows = []
    for r in runs:
        row: dict[str, Any] = {"run": r.name, "path": str(r.path), "source": r.metrics.get("source", "none")}
        for k in diffs:
            row[k] = r.config.get(k, None)
        for k in (*METRIC_COLUMNS, *sharp):
            row[k] = r.metrics.get(k, math.nan)
        rows.append(row)
    return columns, rows, diffs


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def write_csv(path: str | Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_cell(r.get(c)) for c in columns])
    return p


def _md_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        v = json.dumps(v)
    return str(v).replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Figure labels
# ------------------------------------------------------------------------------------------------
def _label(run: Run, diffs: Sequence[str], limit: int = 60) -> str:
    parts = [f"{k}={_md_cell(run.config.get(k))}" for k in diffs if not k.startswith("task.")]
    text = f"{run.name}: " + ", ".join(parts) if parts else run.name
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------
# The whole comparison
# ------------------------------------------------------------------------------------------------
def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, metric: str = "train_loss",
                 plot: PlotSettings | None = None, ignore: Sequence[str] = IGNORE_DEFAULT) -> dict[str, Any]:
    """Compare ``run_dirs`` and write figures and tables into ``out_dir`` (see the module docstring);
    the figures use ``plot``'s levels and log scale, and without ``plot`` only the tables are written.

    Returns a summary: ``runs``, the written files (``table_csv``, ``table_md``,
    ``correlations_csv``, ``figures``), ``differing_keys`` and ``spearman/<metric>`` for every
    sharpness metric.
    """
    if not run_dirs:
        raise UserError("no runs to compare")
    if metric not in METRICS:
        raise UserError(f"unknown compare metric {metric!r}; allowed: {', '.join(METRICS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(str(p)) for p in run_dirs]
    runs = [load_run(p, n, ignore) for p, n in zip(paths, run_names(paths))]
    columns, rows, diffs = comparison_table(runs)
    sharp = [c for c in sharpness_columns(runs) if not c.startswith(NOT_CORRELATED)]
    corr = rank_correlations(rows, sharp)

    table_csv = write_csv(out / "compare.csv", columns, rows)
    corr_csv = write_csv(out / "correlations.csv", ["metric", "spearman_rho", "p_value", "runs"], corr)
    md_cols = [c for c in columns if c != "path"]
    md = [f"# Comparison of {len(runs)} runs\n", markdown_table(md_cols, rows),
          "\ntest_error: 100 - test accuracy (%); gap: test loss - train loss; source: where loss and "
          "accuracy come from.\n",
          "\n## Spearman rank correlation with the generalization gap\n",
          markdown_table(["metric", "spearman_rho", "p_value", "runs"], corr)]
    table_md = out / "compare.md"
    with atomic_path(table_md) as tmp:
        tmp.write_text("\n".join(md))

    figures: list[Path] = []
    labels = {r.name: _label(r, diffs) for r in runs}
    one_d = [r for r in runs if r.surface is not None and r.surface.get("y") is None]
    two_d = [r for r in runs if r.surface is not None and r.surface.get("y") is not None]
    if plot is not None and one_d:
        fig = figure_overlay_1d(one_d, metric=metric, labels=[labels[r.name] for r in one_d], log=bool(plot.log),
                                loss_max=plot.loss_max)
        figures += save(fig, out / "compare_1d")
    if plot is not None and two_d:
        fig = figure_contour_grid(two_d, metric=metric, labels=[labels[r.name] for r in two_d],
                                  levels=LevelSpec.from_plot(plot), log=bool(plot.log))
        figures += save(fig, out / "compare_2d")

    summary: dict[str, Any] = {
        "runs": len(runs), "run_dirs": [str(r.path) for r in runs], "differing_keys": diffs,
        "table_csv": str(table_csv), "table_md": str(table_md), "correlations_csv": str(corr_csv),
        "figures": [str(f) for f in figures], "columns": columns,
        "rows": [{k: v for k, v in r.items()} for r in rows],
    }
    summary.update({f"spearman/{c['metric']}": c["spearman_rho"] for c in corr})
    return summary
