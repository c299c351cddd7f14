"""Comparing the models of a sweep or study: one row per model, swept parameters, measures,
rank correlations with test error and the generalization gap, and the figures a paper uses.

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

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_exp.errors import UserError
from landscape_exp.provenance import file_sha256
from landscape_exp.settings import read_run_config
from landscape_exp.storage import atomic_path
from landscape_exp.surface.store import read_sharpness

if TYPE_CHECKING:
    from landscape_exp.settings import PlotSettings

IGNORE_DEFAULT: tuple[str, ...] = ("paths", "hydra", "logger", "progress")
# What makes a model: the keys of Settings.training_identity (the checkpoint cache's key).
IDENTITY: tuple[str, ...] = ("model", "dataset", "optim", "seed", "eval.loss")
METRICS: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc")  # drawable surface metrics
METRIC_COLUMNS: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc", "test_error", "gap")
TARGETS: tuple[str, ...] = ("test_error", "gap")
HESSIAN_KEYS: tuple[str, ...] = ("lambda_max", "lambda_min", "trace")
# Not measures of sharpness themselves: in the table, left out of the correlations.
NOT_CORRELATED: tuple[str, ...] = ("sharpness/base_loss", "sharpness/basin_open")
PAIR_TASKS: tuple[str, ...] = ("interp1d", "plane", "connect", "connect_eval")
MIN_N = 5  # below this a rank correlation of a handful of models says nothing
_SKIP_DIRS = {"checkpoints", "wandb", "__pycache__"}
_MAX_DEPTH = 4  # study/stage/job is 2 deep; deeper is a data or cache directory


@dataclass(frozen=True)
class Value:
    """A measure's value and its confidence interval (None where the measure has none)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    higher_is_sharper: bool | None = None


@dataclass
class Run:
    """One job directory, read: its flattened config, summary, surface, metrics and measures."""

    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    surface: dict[str, Any] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    measures: dict[str, Value] = field(default_factory=dict)
    task: str = "?"


@dataclass
class Model:
    """One checkpoint and every job that analysed it: a row of the comparison."""

    key: str
    runs: list[Run]
    checkpoint: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    measures: dict[str, Value] = field(default_factory=dict)
    label: str = ""


# ------------------------------------------------------------------------------------------------
# Finding jobs
# ------------------------------------------------------------------------------------------------
def _natural(p: Path) -> list[Any]:
    """bs32 before bs256, 2 before 10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", p.name) if t]


def _is_job(p: Path) -> bool:
    return (p / "summary.json").is_file() or (p / ".hydra" / "config.yaml").is_file()


def _job_dirs(root: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    out: list[Path] = []
    skip = {p.resolve() for p in exclude}

    def visit(d: Path, depth: int) -> None:
        if d.resolve() in skip:
            return
        if _is_job(d):
            out.append(d)  # a job's own subdirectories are its files, not more jobs
            return
        if depth >= _MAX_DEPTH:
            return
        for c in sorted((c for c in d.iterdir() if c.is_dir() and not c.is_symlink()), key=_natural):
            if not c.name.startswith(".") and c.name not in _SKIP_DIRS:
                visit(c, depth + 1)

    visit(root, 0)
    return out


def note(msg: str) -> None:
    """A job left out, said once on the console (and run.log)."""
    print(f"note: {msg}")


def _read_summary(p: Path) -> dict[str, Any]:
    sp = p / "summary.json"
    try:
        s = json.loads(sp.read_text())
    except FileNotFoundError:
        raise UserError(f"run directory {str(p)!r} has no summary.json") from None
    except ValueError as e:
        raise UserError(f"{str(sp)!r} is not valid JSON ({e})") from None
    if not isinstance(s, dict):
        raise UserError(f"{str(sp)!r} holds a {type(s).__name__}, not a job summary (a JSON object)")
    return s


def _is_shard(summary: Mapping[str, Any]) -> bool:
    """A shard's job: its surface is merged (or still to be merged) by another job."""
    return "shard_count" in summary and "surface_file" not in summary


def _merged_home(summary: Mapping[str, Any]) -> str | None:
    """Where a shard's surface was merged: named by the job that merged it, else the merged file
    beside the shard file (``surface.shard-0000-of-0002.h5`` -> ``surface.h5``) if it exists."""
    if summary.get("merged_into"):
        return str(summary["merged_into"])
    f = Path(str(summary.get("shard_file") or ""))
    merged = f.with_name(re.sub(r"\.shard-\d+-of-\d+(?=\.[^.]*$|$)", "", f.name))
    return str(merged.parent) if summary.get("shard_file") and merged != f and merged.is_file() else None


def _shard_note(shards: Sequence[tuple[Path, Mapping[str, Any]]]) -> str:
    """One line for all shard jobs (a sharded sweep has many)."""
    homes = {h for _, s in shards if (h := _merged_home(s))}
    unmerged = [p.name for p, s in shards if not _merged_home(s)]
    names = ", ".join(p.name for p, _ in shards[:6]) + (", ..." if len(shards) > 6 else "")
    text = f"skipping {len(shards)} shard jobs ({names}): not runs of their own"
    if homes:
        text += f"; their surfaces are merged in {len(homes)} directories ({', '.join(sorted(homes)[:3])}{', ...' if len(homes) > 3 else ''}), counted there"
    if unmerged:
        text += f"; {len(unmerged)} name no merged surface yet (task=merge merges shards by hand)"
    return text


def find_runs(sweep_dir: str | Path | None = None, runs: Sequence[str | Path] | None = None,
              exclude: Sequence[str | Path] = ()) -> list[Path]:
    """Job directories: every job anywhere under ``sweep_dir`` (natural order: bs32 before bs256)
    and/or the directories in ``runs``. A job without ``summary.json`` (failed or still running)
    and a shard whose surface another job merges are skipped with a note; a listed run without
    ``summary.json`` is a UserError. ``exclude``: directories passed over in silence (the compare
    job's own, which a study puts inside the study's directory)."""
    out: list[Path] = []
    if sweep_dir is None and not runs:
        raise UserError("nothing to compare: give task.sweep_dir=<sweep or study dir> or task.runs=[<run dir>,...]")
    if sweep_dir is not None:
        sd = Path(str(sweep_dir)).expanduser()
        if not sd.is_dir():
            raise UserError(f"task.sweep_dir {str(sd)!r} is not a directory")
        jobs = _job_dirs(sd, [Path(str(p)) for p in exclude])
        if not jobs:
            raise UserError(f"task.sweep_dir {str(sd)!r} has no job directories (with .hydra/config.yaml or "
                            f"summary.json) up to {_MAX_DEPTH} levels down; is it a sweep or study directory?")
        shards = []
        for p in jobs:
            if not (p / "summary.json").is_file():
                note(f"skipping {str(p)!r}: no summary.json (the job failed or has not finished)")
                continue
            summary = _read_summary(p)
            if "table_csv" in summary and "correlations_csv" in summary:
                note(f"skipping {str(p)!r}: a compare job")
            elif _is_shard(summary):
                shards.append((p, summary))
            else:
                out.append(p)
        if shards:
            note(_shard_note(shards))
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


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_run_config(run_dir: str | Path, ignore: Sequence[str] = IGNORE_DEFAULT) -> dict[str, Any]:
    """The run's ``.hydra/config.yaml`` flattened to dotted keys, minus the ``ignore``d ones
    (``{}`` without the file; interpolations resolved as :func:`settings.read_run_config` does)."""
    cfg = read_run_config(run_dir)
    if cfg is None:
        return {}
    return {k: v for k, v in flatten_config(cfg).items() if not _under(k, ignore)}


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
    if isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _opt(v: Any) -> float | None:
    x = _num(v)
    return x if math.isfinite(x) else None


def _checkpoint_metrics(summary: Mapping[str, Any], surface: Mapping[str, Any] | None) -> dict[str, Any]:
    from landscape_exp.checkpoint import load_checkpoint

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
    out: dict[str, Any] = {k: _num(vals.get(k)) for k in names}
    out["test_error"] = 100.0 - out["test_acc"]
    out["gap"] = out["test_loss"] - out["train_loss"]
    out["source"] = src
    return out


def run_measures(summary: Mapping[str, Any], surface: Mapping[str, Any] | None = None,
                 task: str = "?") -> dict[str, Value]:
    """Every measure of one job: ``sharpness/*`` (summary and surface file), the Hessian task's
    extremes and trace (``hessian/*``; the trace's CI is +-1.96 standard errors of Hutchinson's
    estimate) and the entries of ``summary["measures"]``."""
    out: dict[str, Value] = {k: Value(v) for k, v in read_sharpness(surface).items()} if surface is not None else {}
    for k, v in summary.items():
        if k.startswith("sharpness/") and _opt(v) is not None:
            out[k] = Value(float(v))
    if task == "hessian":
        for k in HESSIAN_KEYS:
            if _opt(summary.get(k)) is not None:
                out[f"hessian/{k}"] = Value(float(summary[k]))
        se = _opt(summary.get("trace_stderr"))
        if "hessian/trace" in out and se is not None:
            t = out["hessian/trace"].value
            out["hessian/trace"] = Value(t, t - 1.96 * se, t + 1.96 * se, True)
    measures = summary.get("measures")
    if isinstance(measures, Mapping):
        for name, m in measures.items():
            if isinstance(m, Mapping) and "value" in m:
                hs = m.get("higher_is_sharper")
                out[str(name)] = Value(_num(m["value"]), _opt(m.get("ci_low")), _opt(m.get("ci_high")),
                                       hs if isinstance(hs, bool) else None)
            elif _opt(m) is not None:  # a bare number
                out[str(name)] = Value(float(m))
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
    summary = _read_summary(p)
    surf_path = _surface_path(p, summary)
    surface = read_surface(surf_path) if surf_path is not None else None
    config = load_run_config(p, ignore)
    if isinstance(summary.get("model_config"), Mapping) and not _under("model", ignore):
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


def _empty(run: Run) -> str | None:
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
    finite = any(math.isfinite(_num(v)) for k, v in run.metrics.items() if k != "source")
    return None if finite or any(math.isfinite(v.value) for v in run.measures.values()) else "no loss, accuracy or measure in it"


# ------------------------------------------------------------------------------------------------
# Models: the jobs of one checkpoint as one row
# ------------------------------------------------------------------------------------------------
def _checkpoint_ref(run: Run) -> tuple[str | None, str | None]:
    """``(path, recorded sha256)`` of the checkpoint ``run`` analysed or (training) wrote."""
    if run.task == "train":
        return run.summary.get("final_checkpoint"), None
    attrs = (run.surface or {}).get("attrs", {})
    if attrs.get("checkpoint"):
        fp = attrs.get("fingerprint")
        try:
            sha = (json.loads(fp) if isinstance(fp, str) else dict(fp or {})).get("checkpoint_sha256")
        except (ValueError, TypeError):
            sha = None
        return str(attrs["checkpoint"]), sha
    if run.summary.get("checkpoint1"):  # a curve between two checkpoints: its first end
        return str(run.summary["checkpoint1"]), None
    if run.summary.get("hessian_file"):
        from landscape_exp.storage import open_h5

        hf = Path(str(run.summary["hessian_file"]))
        if hf.is_file():
            with open_h5(hf, "Hessian file") as f:
                return (str(f.attrs["checkpoint"]) if "checkpoint" in f.attrs else None,
                        str(f.attrs["checkpoint_sha256"]) if "checkpoint_sha256" in f.attrs else None)
    c = run.config.get("checkpoint")
    return (str(c) if c else None), None


def _identity(path: str | None, sha: str | None, cache: dict[str, str]) -> str | None:
    """The checkpoint's content hash (its file's when it exists), else its resolved path."""
    if path:
        p = Path(path).expanduser().resolve()
        if p.is_file():
            if str(p) not in cache:  # each checkpoint read once, however many jobs name it
                cache[str(p)] = file_sha256(p)
            return "sha256:" + cache[str(p)]
    if sha:
        return "sha256:" + sha
    return f"path:{Path(path).expanduser().resolve()}" if path else None


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def _column_names(groups: Sequence[Sequence[Run]]) -> dict[tuple[str, str], str]:
    """``(task, measure) -> column``: the bare measure name, or ``"<name> (<task>)"`` where the jobs
    of two tasks give one model different values (a rise along one direction is not the rise over
    a plane; a measure of the model itself, computed by both, is one column)."""
    split: set[str] = set()
    tasks: dict[str, set[str]] = {}
    for rs in groups:
        first: dict[str, tuple[str, float]] = {}
        for r in rs:
            for m, v in r.measures.items():
                tasks.setdefault(m, set()).add(r.task)
                t, x = first.setdefault(m, (r.task, v.value))
                if t != r.task and not _same(x, v.value):
                    split.add(m)
    return {(t, m): (f"{m} ({t})" if m in split else m) for m, ts in tasks.items() for t in ts}


def group_models(runs: Sequence[Run], cache: dict[str, str] | None = None) -> list[Model]:
    """One :class:`Model` per checkpoint (jobs without one are a model each), in first-seen order.
    ``cache``: checkpoint hashes by path, shared with the other steps of one comparison."""
    cache = {} if cache is None else cache
    groups: dict[str, list[Run]] = {}
    refs: dict[str, str | None] = {}
    for r in runs:
        path, sha = _checkpoint_ref(r)
        key = _identity(path, sha, cache) or f"job:{r.path.resolve()}"
        groups.setdefault(key, []).append(r)
        refs.setdefault(key, str(Path(path).expanduser().resolve()) if path else None)
    names = _column_names(list(groups.values()))
    models = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.task != "train")  # the job that made the checkpoint first
        base = rs[0]  # the job that trained the checkpoint (if any) knows its config best
        ident = {k: v for k, v in base.config.items() if _under(k, IDENTITY)}
        metrics = dict(min(rs, key=lambda r: SOURCES.index(r.metrics.get("source", "none"))).metrics)
        if metrics["source"] == "none":  # no job evaluated both splits: the checkpoint's own record
            metrics = run_metrics(rs[0].summary, None, _checkpoint_metrics(rs[0].summary, rs[0].surface))
        measures: dict[str, Value] = {}
        for r in rs:
            for m, v in r.measures.items():
                col = names[(r.task, m)]
                if col in measures and not _same(measures[col].value, v.value):
                    note(f"{col}: two {r.task} jobs of one model differ ({measures[col].value:.6g} and {v.value:.6g}, "
                         f"the second from {str(r.path)!r}); the table keeps the first")
                    continue
                measures[col] = v
        models.append(Model(key, list(rs), refs[key], ident, metrics, dict(sorted(measures.items()))))
    return models


# ------------------------------------------------------------------------------------------------
# Swept parameters
# ------------------------------------------------------------------------------------------------
def sort_key(v: Any) -> tuple[int, float, str]:
    """Numbers first and by value (``32 < 256``, ``"5e-4"`` too), then text, then missing."""
    if v is None:
        return (2, 0.0, "")
    x = _num(v)
    return (0, x, "") if math.isfinite(x) else (1, 0.0, _key(v))


def override_keys(run_dir: str | Path) -> list[str]:
    """The keys the job's command line set (``.hydra/overrides.yaml``), in the order given."""
    import yaml

    p = Path(run_dir) / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(p.read_text()) if p.is_file() else None
    except (OSError, yaml.YAMLError):
        return []
    return [str(o).split("=", 1)[0].lstrip("+~") for o in items or [] if "=" in str(o)]


def swept_parameters(configs: Sequence[Mapping[str, Any]], ignore: Sequence[str] = (),
                     order: Sequence[str] = ()) -> list[str]:
    """The model-identity keys (``IDENTITY``) whose values differ across ``configs``: those in
    ``order`` (the sweep's overrides) first and in its order, then the rest as the configs have them."""
    keys = [k for k in config_differences(configs) if _under(k, IDENTITY) and not _under(k, ignore)]
    rank = {k: i for i, k in enumerate(dict.fromkeys(order))}
    return sorted(keys, key=lambda k: rank.get(k, len(rank)))


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """``optim.batch_size`` -> ``batch_size`` where the last part is unique among ``keys``."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def label_models(models: list[Model], swept: Sequence[str]) -> None:
    """``batch_size=32, weight_decay=0``; without swept keys the checkpoint's or job's name."""
    short = short_names(swept)
    for m in models:
        if swept:
            m.label = ", ".join(f"{short[k]}={_fmt(m.config.get(k))}" for k in swept)
        else:
            m.label = Path(m.checkpoint).parent.parent.name if m.checkpoint else m.runs[0].name
    labels = [m.label for m in models]
    for m in models:
        if labels.count(m.label) > 1:  # same swept values, another checkpoint (e.g. given by path)
            m.label += f" [{m.runs[0].name}]"


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------
def small_sample_note(n: int, min_n: int = MIN_N) -> str:
    if n < 3:
        return f"n={n}, too few for a rank correlation"
    return f"n={n}, too few to mean anything" if n < min_n else ""


def rank_correlations(table: Sequence[Mapping[str, Any]], metrics: Sequence[str], target: str = "gap",
                      min_n: int = MIN_N) -> list[dict[str, Any]]:
    """Spearman's rho and Kendall's tau (scipy, with p-values) between each metric and ``target``
    over the rows where both are finite; NaN with fewer than 3 such rows or a constant column, a
    ``note`` below ``min_n`` rows."""
    from scipy.stats import kendalltau, spearmanr

    out = []
    for m in metrics:
        pairs = [(_num(r.get(m)), _num(r.get(target))) for r in table]
        pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
        n = len(pairs)
        rho = rp = tau = tp = math.nan
        msg = small_sample_note(n, min_n)
        if n >= 3:
            a, b = np.array(pairs).T
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                s, k = spearmanr(a, b), kendalltau(a, b)
                rho, rp, tau, tp = float(s.statistic), float(s.pvalue), float(k.statistic), float(k.pvalue)
            else:
                msg = ", ".join(x for x in (msg, f"{m if np.ptp(a) == 0 else target} is the same for every model") if x)
        out.append({"measure": m, "target": target, "n": n, "spearman_rho": rho, "spearman_p": rp,
                    "kendall_tau": tau, "kendall_p": tp, "note": msg})
    return out


def stats_text(c: Mapping[str, Any]) -> str:
    """One line: ``Spearman 0.8 (p=0.2), Kendall 0.67 (p=0.33), n=4, too few to mean anything``."""
    if math.isnan(c["spearman_rho"]):
        return c["note"] or f"n={c['n']}"
    text = (f"Spearman {c['spearman_rho']:.2f} (p={c['spearman_p']:.2g}), "
            f"Kendall {c['kendall_tau']:.2f} (p={c['kendall_p']:.2g})")
    return f"{text}, {c['note'] or 'n=' + str(c['n'])}"


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
CI_SUFFIXES = (" ci_low", " ci_high")


def _measure_columns(items: Sequence[Mapping[str, Value]]) -> tuple[list[str], set[str], list[str]]:
    """``(measures, those with a CI anywhere, value and CI columns)``."""
    measures = sorted({k for m in items for k in m})
    with_ci = {k for m in items for k, v in m.items() if v.ci_low is not None or v.ci_high is not None}
    cols = [c for k in measures for c in ([k, k + CI_SUFFIXES[0], k + CI_SUFFIXES[1]] if k in with_ci else [k])]
    return measures, with_ci, cols


def _fill(row: dict[str, Any], values: Mapping[str, Value], measures: Sequence[str], with_ci: set[str]) -> None:
    for k in measures:
        v = values.get(k)
        row[k] = v.value if v else math.nan
        if k in with_ci:
            row[k + CI_SUFFIXES[0]] = v.ci_low if v else None
            row[k + CI_SUFFIXES[1]] = v.ci_high if v else None


def _rel(p: Path, root: Path | None) -> str:
    try:
        return str(p.resolve().relative_to(root.resolve())) if root else p.name
    except ValueError:
        return str(p)


def comparison_table(models: Sequence[Model], swept: Sequence[str],
                     root: Path | None = None) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """``(columns, rows, measure columns)``: one row per model; a measure with a confidence
    interval in any row gets ``<name> ci_low`` / ``<name> ci_high`` columns too."""
    measures, with_ci, value_cols = _measure_columns([m.measures for m in models])
    columns = ["model", *swept, *METRIC_COLUMNS, *value_cols, "source", "jobs", "checkpoint"]
    rows = []
    for m in models:
        row: dict[str, Any] = {"model": m.label, "source": m.metrics.get("source", "none"), "checkpoint": m.checkpoint,
                               "jobs": "; ".join(_rel(r.path, root) for r in m.runs)}
        row.update({k: m.config.get(k) for k in swept})
        row.update({k: m.metrics.get(k, math.nan) for k in METRIC_COLUMNS})
        _fill(row, m.measures, measures, with_ci)
        rows.append(row)
    return columns, rows, measures


def replicate_keys(swept: Sequence[str], replicates: Sequence[str]) -> list[str]:
    """The swept keys that are replicates (``task.replicates``, e.g. ``seed``): models that differ
    only in them are runs of one setting."""
    return [k for k in swept if k in set(replicates)]


def over_replicates(rows: Sequence[Mapping[str, Any]], settings: Sequence[str], values: Sequence[str],
                    level: float = 0.95) -> list[dict[str, Any]]:
    """One row per setting (the distinct values of ``settings`` among ``rows``, in first-seen
    order): ``n`` (replicates with a finite value, per column in ``<k> n``), and for each column in
    ``values`` the mean over its replicates, ``<k> sd`` (sample standard deviation) and the
    two-sided ``level`` Student-t interval of the mean as ``<k> ci_low`` / ``<k> ci_high`` (NaN
    below two finite values). The interval is of the replicates' spread: a measure's own interval
    within one model is not in it."""
    from scipy.stats import t as student_t

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key([r.get(k) for k in settings]), []).append(r)
    out = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].get(k) for k in settings}
        row["n"] = len(members)
        for k in values:
            x = np.array([_num(m.get(k)) for m in members])
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if len(x) else math.nan
            sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
            half = float(student_t.ppf(0.5 + level / 2, len(x) - 1)) * sd / math.sqrt(len(x)) if len(x) > 1 else math.nan
            row.update({k: mean, f"{k} sd": sd, f"{k} n": len(x), k + CI_SUFFIXES[0]: mean - half,
                        k + CI_SUFFIXES[1]: mean + half})
        out.append(row)
    return out


def pair_table(pairs: Sequence[Run], labels: Mapping[int, str],
               root: Path | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per job between models (interpolation, plane, curve): its end models and measures
    (barrier, mc, ...); a property of the pair, so not in the models' rows or correlations."""
    measures, with_ci, value_cols = _measure_columns([r.measures for r in pairs])
    rows = []
    for r in pairs:
        row: dict[str, Any] = {"between": labels.get(id(r), r.name), "task": r.task, "job": _rel(r.path, root)}
        _fill(row, r.measures, measures, with_ci)
        rows.append(row)
    return ["between", "task", *value_cols, "job"], rows


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


def value_with_ci(row: Mapping[str, Any], c: str) -> str:
    """Column ``c`` of ``row`` as text, ``value [lo, hi]`` where the row has ``<c> ci_low`` /
    ``<c> ci_high`` (an interval that is NaN at both ends, as over a single replicate, is none)."""
    text = _md_cell(row.get(c))
    lo, hi = row.get(c + CI_SUFFIXES[0]), row.get(c + CI_SUFFIXES[1])
    if (lo is not None or hi is not None) and not (math.isnan(_num(lo)) and math.isnan(_num(hi))):
        text += f" [{_md_cell(lo) or '?'}, {_md_cell(hi) or '?'}]"
    return text


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table; a column whose ``<c> ci_low``/``<c> ci_high`` are in the rows shows as
    ``value [lo, hi]`` (the CI columns themselves are not shown)."""
    shown = [c for c in columns if not c.endswith(CI_SUFFIXES)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    lines += ["| " + " | ".join(value_with_ci(r, c) for c in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """Fixed-width columns for the console."""
    cells = [[str(c) for c in columns]] + [[_md_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


# ------------------------------------------------------------------------------------------------
# The whole comparison
# ------------------------------------------------------------------------------------------------
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
    from landscape_exp.figures.base import LevelSpec, save

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
        why = _empty(r)
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
            lines = [", ".join(f"{short[o]}={_fmt(r.get(o))}" for o in others) for r in drawn]
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
    return [_checkpoint_ref(run)[0], *[str(o) for o in others if o]]


def _between(runs: Sequence[Run], base: Sequence[Run], cache: dict[str, str]) -> tuple[list[Run], list[Run]]:
    """``(between, attached)``: jobs whose end models are all rows are between models; one whose
    other end is no row (a curve to a seed+1 minimum trained for it) measures its first model."""
    rows = {_identity(*_checkpoint_ref(r), cache) for r in base}
    between, attached = [], []
    for r in runs:
        ends = [_identity(e, None, cache) for e in _ends(r)]
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
        out[id(r)] = " -> ".join(label.get(_identity(e, None, cache) or "", _short_checkpoint(e)) for e in ends)
    return out
