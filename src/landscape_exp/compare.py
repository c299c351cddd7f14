"""Comparing runs: config differences, test error, generalization gap, sharpness, figures.

A run is a Hydra run directory: ``.hydra/config.yaml`` (the job's config), ``summary.json``
(written by every task) and, for the surface tasks, ``surface.h5`` (or the ``surface_file`` the
summary names). A multirun directory holds one such run per numbered subdirectory.

What a comparison writes (:func:`compare_runs`):

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
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from landscape_exp.errors import UserError
from landscape_exp.plotting import PNG_DPI, XLABEL_2D, YLABEL_2D, contour_levels, mask_invalid
from landscape_exp.sharpness import read_sharpness

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
    """The run's ``.hydra/config.yaml`` flattened to dotted keys, minus the ``ignore``d ones.

    Interpolations are resolved where they can be outside Hydra (``${oc.env:...}``, references
    to other keys); one that cannot (``${hydra:...}``) keeps its text. ``{}`` without the file.
    """
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:
        raise UserError(f"config {str(path)!r} is unreadable ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    raw = flatten_config(OmegaConf.to_container(cfg, resolve=False))
    out: dict[str, Any] = {}
    for key, v in raw.items():
        if _ignored(key, ignore):
            continue
        if isinstance(v, str) and "${" in v or isinstance(v, list) and "${" in json.dumps(v):
            try:
                node = OmegaConf.select(cfg, key)
                v = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            except Exception:  # e.g. ${hydra:...} outside Hydra: keep the text
                pass
        out[key] = v
    return out


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
    from landscape_exp.surface_file import read_surface

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
    return Run(path=p, name=name or p.name, config=load_run_config(p, ignore), summary=summary, surface=surface,
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
    with open(p, "w", newline="") as f:
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
# Figures
# ------------------------------------------------------------------------------------------------
def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # pyplot-free: nothing global is touched
    return fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """``<stem>.png`` (dpi 150) and ``<stem>.pdf``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.parent / (stem.name + ".png"), stem.parent / (stem.name + ".pdf")
    fig.savefig(png, dpi=PNG_DPI, format="png")
    fig.set_layout_engine("none")
    fig.savefig(pdf, format="pdf", metadata={"CreationDate": None})
    return [png, pdf]


def _label(run: Run, diffs: Sequence[str], limit: int = 60) -> str:
    parts = [f"{k}={_md_cell(run.config.get(k))}" for k in diffs if not k.startswith("task.")]
    text = f"{run.name}: " + ", ".join(parts) if parts else run.name
    return text if len(text) <= limit else text[: limit - 1] + "…"


def figure_overlay_1d(runs: Sequence[Run], *, metric: str = "train_loss", labels: Sequence[str] | None = None,
                      log: bool = False, loss_max: float | None = None) -> Figure:
    """The 1D curves of ``runs`` overlaid, one colour per run: ``metric`` solid and the same
    quantity on the other split dashed (left panel); for a loss ``metric``, the accuracies in a
    right panel where the surfaces hold them (train solid, test dashed)."""
    one_d = [r for r in runs if r.surface is not None and r.surface.get("y") is None]
    if not one_d:
        raise UserError("no run has a 1D surface to overlay")
    labels = list(labels) if labels is not None else [r.name for r in one_d]
    split, quantity = metric.split("_", 1)
    other = f"{'test' if split == 'train' else 'train'}_{quantity}"
    if not any(other in r.surface for r in one_d):
        other = None
    is_loss = quantity == "loss"
    has_acc = is_loss and any(k in r.surface for r in one_d for k in ("train_acc", "test_acc"))
    fig = _new_figure((11.0, 4.6) if has_acc else (6.4, 4.6))
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    for i, (r, lab) in enumerate(zip(one_d, labels)):
        s, col = r.surface, f"C{i % 10}"
        x = np.asarray(s["x"], dtype=float)
        panels = [(metric, axes[0], "-", lab), (other, axes[0], "--", None)]
        if has_acc:
            panels += [("train_acc", axes[1], "-", None), ("test_acc", axes[1], "--", None)]
        for key, ax, ls, legend in panels:
            if key is None or key not in s:
                continue
            v = mask_invalid(s[key], s.get("done")).filled(np.nan)
            if log and key.endswith("loss"):
                v = np.where(v > 0, v, np.nan)
            ax.plot(x, v, color=col, linestyle=ls, linewidth=1.4, label=legend)
    axes[0].set_xlabel("alpha")
    axes[0].set_ylabel(quantity if is_loss else "accuracy (%)")
    axes[0].set_title(metric.replace("_", " ") + (f" (dashed: {other.replace('_', ' ')})" if other else ""))
    if is_loss and log:
        axes[0].set_yscale("log")
    if is_loss and loss_max is not None and not log:
        axes[0].set_ylim(top=float(loss_max))
    if not is_loss:
        axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=7)
    if has_acc:
        axes[1].set_xlabel("alpha")
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_ylim(0, 100)
        axes[1].set_title("accuracy (solid: train, dashed: test)")
    return fig


def figure_contour_grid(runs: Sequence[Run], *, metric: str = "train_loss", labels: Sequence[str] | None = None,
                        vmin: float = 0.1, vmax: float = 10.0, vlevel: float = 0.5, log: bool = False) -> Figure:
    """One panel per run with a 2D surface: filled contours of ``metric`` on one shared colour
    scale (levels ``contour_levels(vmin, vmax, vlevel, log)``, one colour bar), the checkpoint
    starred at the centre."""
    two_d = [r for r in runs if r.surface is not None and r.surface.get("y") is not None]
    if not two_d:
        raise UserError("no run has a 2D surface for a contour grid")
    labels = list(labels) if labels is not None else [r.name for r in two_d]
    if metric.endswith("_acc"):  # percent: the single-run figures' fixed accuracy levels
        vmin, vmax, vlevel, log = 0.0, 100.0, 5.0, False
    levels = contour_levels(vmin, vmax, vlevel, log)
    norm = Normalize(float(levels[0]), float(np.log10(vmax) if log else vmax))
    n = len(two_d)
    ncols = int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    fig = _new_figure((3.6 * ncols + 1.2, 3.3 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    mappable = None
    for idx, ax in enumerate(axes.ravel()):
        if idx >= n:
            ax.set_axis_off()
            continue
        r, lab = two_d[idx], labels[idx]
        s = r.surface
        ax.set_title(lab, fontsize=8)
        ax.set_xlabel(XLABEL_2D, fontsize=7)
        ax.set_ylabel(YLABEL_2D, fontsize=7)
        if metric not in s:
            ax.text(0.5, 0.5, f"no {metric}", transform=ax.transAxes, ha="center")
            continue
        z = mask_invalid(s[metric], s.get("done"))
        if log:
            bad = np.ma.getmaskarray(z) | ~(z.filled(np.nan) > 0)
            z = np.ma.MaskedArray(np.log10(np.where(bad, 1.0, z.filled(1.0))), mask=bad)
        x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
        if np.ma.getmaskarray(z).all():
            ax.text(0.5, 0.5, "no computed points", transform=ax.transAxes, ha="center")
            continue
        cs = ax.contourf(x, y, z, levels=levels, cmap="viridis", norm=norm, extend="both")
        ax.contour(x, y, z, levels=levels, colors="k", linewidths=0.4, alpha=0.5)
        mappable = cs
        if x[0] <= 0 <= x[-1] and y[0] <= 0 <= y[-1]:
            ax.plot([0], [0], marker="*", color="red", markeredgecolor="black", markersize=10, linestyle="none")
        ax.tick_params(labelsize=7)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, label=(f"log10({metric})" if log else metric).replace("_", " "))
    fig.suptitle(f"{metric.replace('_', ' ')}: shared colour scale", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------
# The whole comparison
# ------------------------------------------------------------------------------------------------
def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, metric: str = "train_loss",
                 plot_cfg: Mapping[str, Any] | None = None, ignore: Sequence[str] = IGNORE_DEFAULT) -> dict[str, Any]:
    """Compare ``run_dirs`` and write figures and tables into ``out_dir`` (see the module docstring).

    Returns a summary: ``runs``, the written files (``table_csv``, ``table_md``,
    ``correlations_csv``, ``figures``), ``differing_keys`` and ``spearman/<metric>`` for every
    sharpness metric.
    """
    if not run_dirs:
        raise UserError("no runs to compare")
    if metric not in METRICS:
        raise UserError(f"unknown compare metric {metric!r}; allowed: {', '.join(METRICS)}")
    plot_cfg = dict(plot_cfg or {})
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
    table_md.write_text("\n".join(md))

    figures: list[Path] = []
    labels = {r.name: _label(r, diffs) for r in runs}
    log = bool(plot_cfg.get("log", False))
    if any(r.surface is not None and r.surface.get("y") is None for r in runs):
        one_d = [r for r in runs if r.surface is not None and r.surface.get("y") is None]
        fig = figure_overlay_1d(one_d, metric=metric, labels=[labels[r.name] for r in one_d], log=log,
                                loss_max=plot_cfg.get("loss_max"))
        figures += save_figure(fig, out / "compare_1d")
    two_d = [r for r in runs if r.surface is not None and r.surface.get("y") is not None]
    if two_d:
        fig = figure_contour_grid(two_d, metric=metric, labels=[labels[r.name] for r in two_d],
                                  vmin=float(plot_cfg.get("vmin", 0.1)), vmax=float(plot_cfg.get("vmax", 10)),
                                  vlevel=float(plot_cfg.get("vlevel", 0.5)), log=log)
        figures += save_figure(fig, out / "compare_2d")

    summary: dict[str, Any] = {
        "runs": len(runs), "run_dirs": [str(r.path) for r in runs], "differing_keys": diffs,
        "table_csv": str(table_csv), "table_md": str(table_md), "correlations_csv": str(corr_csv),
        "figures": [str(f) for f in figures], "columns": columns,
        "rows": [{k: v for k, v in r.items()} for r in rows],
    }
    summary.update({f"spearman/{c['metric']}": c["spearman_rho"] for c in corr})
    return summary
