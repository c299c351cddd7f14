"""One job, read: its flattened config, summary, surface, loss/accuracy and measures.

A *job* is a Hydra job directory: ``.hydra/config.yaml`` (its config) and ``summary.json``
(written by every task when it finishes), plus for the surface tasks ``surface.h5`` (or the
``surface_file`` the summary names). Where loss and accuracy come from (the ``source`` column):
the surface's centre when it holds both splits, else the training job's final metrics, else the
metrics stored in the checkpoint. Measures: every ``sharpness/*`` value, the Hessian's
``lambda_max``, ``lambda_min`` and trace, and every entry of the summary's ``measures``
(:mod:`landscape_exp.measures.record`, the place for new measures)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landscape_exp.compare.discover import note, read_summary
from landscape_exp.config.settings import read_run_config
from landscape_exp.config.tasks import TASK_SPECS
from landscape_exp.errors import UserError
from landscape_exp.measures.record import Measure, measures_from_json
from landscape_exp.surface.store import read_sharpness

IGNORE_DEFAULT: tuple[str, ...] = ("paths", "hydra", "logger", "progress")


# What makes a model: the keys of Settings.training_identity (the checkpoint cache's key).
IDENTITY: tuple[str, ...] = ("model", "dataset", "optim", "seed", "eval.loss")


METRICS: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc")  # drawable surface metrics


METRIC_COLUMNS: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc", "test_error", "gap")


TARGETS: tuple[str, ...] = ("test_error", "gap")


HESSIAN_KEYS: tuple[str, ...] = ("lambda_max", "lambda_min", "trace")


# Not measures of sharpness themselves: in the table, left out of the correlations.
NOT_CORRELATED: tuple[str, ...] = ("sharpness/base_loss", "sharpness/basin_open")


PAIR_TASKS: tuple[str, ...] = tuple(n for n, t in TASK_SPECS.items() if t.between_models)


@dataclass
class Run:
    """One job directory, read: its flattened config, summary, surface, metrics and measures."""

    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    surface: dict[str, Any] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    measures: dict[str, Measure] = field(default_factory=dict)
    task: str = "?"


# ------------------------------------------------------------------------------------------------
# Reading one job
# ------------------------------------------------------------------------------------------------
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


def under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_run_config(run_dir: str | Path, ignore: Sequence[str] = IGNORE_DEFAULT) -> dict[str, Any]:
    """The run's ``.hydra/config.yaml`` flattened to dotted keys, minus the ``ignore``d ones
    (``{}`` without the file; interpolations resolved as :func:`settings.read_run_config` does)."""
    cfg = read_run_config(run_dir)
    if cfg is None:
        return {}
    return {k: v for k, v in flatten_config(cfg).items() if not under(k, ignore)}


def value_key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def config_differences(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys (in first-seen order) whose values are not the same in every config (a key missing
    from some config counts as different)."""
    keys: dict[str, None] = {}
    for c in configs:
        keys.update(dict.fromkeys(c))
    return [k for k in keys if len({value_key(c[k]) if k in c else "<missing>" for c in configs}) > 1]


def as_float(v: Any) -> float:
    if isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def optional_float(v: Any) -> float | None:
    x = as_float(v)
    return x if math.isfinite(x) else None


def checkpoint_metrics(summary: Mapping[str, Any], surface: Mapping[str, Any] | None) -> dict[str, Any]:
    from landscape_exp.io.checkpoint import load_checkpoint

    path = (surface or {}).get("attrs", {}).get("checkpoint") or summary.get("final_checkpoint")
    if not path or not Path(str(path)).is_file():
        return {}
    try:
        return dict(load_checkpoint(path).get("metrics") or {})
    except UserError as e:
        note(f"checkpoint metrics unavailable: {e}")
        return {}


SOURCES = ("surface centre", "training", "checkpoint", "none")  # best first


def run_metrics(summary: Mapping[str, Any], surface: Mapping[str, Any] | None = None,
                checkpoint_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Loss/accuracy, test error, generalization gap and their ``source``.

    All four of train/test loss/accuracy come from one source, so the gap is never a mix: the
    surface's centre if it holds both splits, else the training summary (``final/*``), else
    ``checkpoint_metrics`` (the analysed checkpoint's stored metrics).
    """
    names = ("train_loss", "test_loss", "train_acc", "test_acc")
    if "train_loss/centre" in summary and "test_loss/centre" in summary:
        src, vals = "surface centre", {k: summary.get(f"{k}/centre") for k in names}
    elif "final/train_loss" in summary and "final/test_loss" in summary:
        src, vals = "training", {k: summary.get(f"final/{k}") for k in names}
    elif checkpoint_metrics and "train_loss" in checkpoint_metrics and "test_loss" in checkpoint_metrics:
        src, vals = "checkpoint", {k: checkpoint_metrics.get(k) for k in names}
    else:
        src, vals = "none", {}
    out: dict[str, Any] = {k: as_float(vals.get(k)) for k in names}
    out["test_error"] = 100.0 - out["test_acc"]
    out["gap"] = out["test_loss"] - out["train_loss"]
    out["source"] = src
    return out


def run_measures(summary: Mapping[str, Any], surface: Mapping[str, Any] | None = None,
                 task: str = "?") -> dict[str, Measure]:
    """Every measure of one job: ``sharpness/*`` (summary and surface file), the Hessian task's
    extremes and trace (``hessian/*``; the trace's CI is +-1.96 standard errors of Hutchinson's
    estimate) and the entries of ``summary["measures"]``."""
    out: dict[str, Measure] = {k: Measure(v) for k, v in read_sharpness(surface).items()} if surface is not None else {}
    for k, v in summary.items():
        if k.startswith("sharpness/") and optional_float(v) is not None:
            out[k] = Measure(float(v))
    if task == "hessian":
        for k in HESSIAN_KEYS:
            if optional_float(summary.get(k)) is not None:
                out[f"hessian/{k}"] = Measure(float(summary[k]))
        se = optional_float(summary.get("trace_stderr"))
        if "hessian/trace" in out and se is not None:
            t = out["hessian/trace"].value
            out["hessian/trace"] = Measure(t, t - 1.96 * se, t + 1.96 * se, True)
    out.update(measures_from_json(summary.get("measures")))
    return dict(sorted(out.items()))


def _surface_path(run_dir: Path, summary: Mapping[str, Any]) -> Path | None:
    named = summary.get("surface_file")
    for p in ([Path(str(named))] if named else []) + [run_dir / "surface.h5"]:
        if p.is_file():
            return p
    return None


def load_run(run_dir: str | Path, name: str | None = None, ignore: Sequence[str] = IGNORE_DEFAULT) -> Run:
    """Read one job directory (see the module docstring)."""
    from landscape_exp.surface.store import read_surface

    p = Path(run_dir)
    summary = read_summary(p)
    surf_path = _surface_path(p, summary)
    surface = read_surface(surf_path) if surf_path is not None else None
    config = load_run_config(p, ignore)
    if isinstance(summary.get("model_config"), Mapping) and not under("model", ignore):
        # the run analysed a checkpoint's model, not the model= its config names
        config = {k: v for k, v in config.items() if not k.startswith("model.")}
        config.update(flatten_config({"model": summary["model_config"]}))
    task = str(config.get("task.name") or (surface or {}).get("attrs", {}).get("task")
               or ("train" if "final_checkpoint" in summary else "hessian" if "hessian_file" in summary else "?"))
    return Run(path=p, name=name or p.name, config=config, summary=summary, surface=surface,
               metrics=run_metrics(summary, surface), measures=run_measures(summary, surface, task), task=task)


def run_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the directory name, with as many parents as it takes to be unique."""
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max(len(x) for x in parts) + 1):
        names = ["/".join(x[-depth:]) for x in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def empty_reason(run: Run) -> str | None:
    """Why ``run`` has nothing to compare (None: it has something)."""
    s = run.surface
    if s is not None:
        done = np.asarray(s["done"], bool) if s.get("done") is not None else None
        losses = [np.asarray(v, float)[done] if done is not None else np.asarray(v, float)
                  for k, v in s.items() if k.endswith("_loss") and isinstance(v, np.ndarray)]
        if done is not None and not done.any():
            return "its surface has no computed point"
        if losses and not any(np.isfinite(v).any() for v in losses):
            return "every point of its surface is NaN"
        return None
    finite = any(math.isfinite(as_float(v)) for k, v in run.metrics.items() if k != "source")
    return None if finite or any(math.isfinite(v.value) for v in run.measures.values()) else "no loss, accuracy or measure in it"
