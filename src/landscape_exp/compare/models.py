"""The jobs of one checkpoint as one model, a row of the comparison, and the parameters swept
across models.

A *model* is one checkpoint, identified by its content (sha256; its path where the file is gone):
its training job, its 1D and 2D surfaces and its Hessian are one row, so correlations are over
models, not files. Swept parameters are the keys of what makes a model (``model``, ``dataset``,
``optim``, ``seed``, ``eval.loss``: ``Settings.training_identity``) whose values differ across
models; their values sort as numbers (32 before 256)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landscape_exp.compare.discover import note
from landscape_exp.compare.runs import (
    IDENTITY,
    SOURCES,
    Run,
    as_float,
    checkpoint_metrics,
    config_differences,
    run_metrics,
    under,
    value_key,
)
from landscape_exp.io.provenance import file_sha256
from landscape_exp.measures.record import Measure


@dataclass
class Model:
    """One checkpoint and every job that analysed it: a row of the comparison."""

    key: str
    runs: list[Run]
    checkpoint: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    measures: dict[str, Measure] = field(default_factory=dict)
    label: str = ""


# ------------------------------------------------------------------------------------------------
# Models: the jobs of one checkpoint as one row
# ------------------------------------------------------------------------------------------------
def checkpoint_ref(run: Run) -> tuple[str | None, str | None]:
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
        from landscape_exp.io.files import open_h5

        hf = Path(str(run.summary["hessian_file"]))
        if hf.is_file():
            with open_h5(hf, "Hessian file") as f:
                return (str(f.attrs["checkpoint"]) if "checkpoint" in f.attrs else None,
                        str(f.attrs["checkpoint_sha256"]) if "checkpoint_sha256" in f.attrs else None)
    c = run.config.get("checkpoint")
    return (str(c) if c else None), None


def checkpoint_identity(path: str | None, sha: str | None, cache: dict[str, str]) -> str | None:
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
        path, sha = checkpoint_ref(r)
        key = checkpoint_identity(path, sha, cache) or f"job:{r.path.resolve()}"
        groups.setdefault(key, []).append(r)
        refs.setdefault(key, str(Path(path).expanduser().resolve()) if path else None)
    names = _column_names(list(groups.values()))
    models = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.task != "train")  # the job that made the checkpoint first
        base = rs[0]  # the job that trained the checkpoint (if any) knows its config best
        ident = {k: v for k, v in base.config.items() if under(k, IDENTITY)}
        metrics = dict(min(rs, key=lambda r: SOURCES.index(r.metrics.get("source", "none"))).metrics)
        if metrics["source"] == "none":  # no job evaluated both splits: the checkpoint's own record
            metrics = run_metrics(rs[0].summary, None, checkpoint_metrics(rs[0].summary, rs[0].surface))
        measures: dict[str, Measure] = {}
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
    x = as_float(v)
    return (0, x, "") if math.isfinite(x) else (1, 0.0, value_key(v))


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
    keys = [k for k in config_differences(configs) if under(k, IDENTITY) and not under(k, ignore)]
    rank = {k: i for i, k in enumerate(dict.fromkeys(order))}
    return sorted(keys, key=lambda k: rank.get(k, len(rank)))


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """``optim.batch_size`` -> ``batch_size`` where the last part is unique among ``keys``."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def format_value(v: Any) -> str:
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
            m.label = ", ".join(f"{short[k]}={format_value(m.config.get(k))}" for k in swept)
        else:
            m.label = Path(m.checkpoint).parent.parent.name if m.checkpoint else m.runs[0].name
    labels = [m.label for m in models]
    for m in models:
        if labels.count(m.label) > 1:  # same swept values, another checkpoint (e.g. given by path)
            m.label += f" [{m.runs[0].name}]"
