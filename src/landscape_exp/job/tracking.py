"""Experiment tracking: Weights & Biases (offline by default) or nothing.

* ``logger=wandb`` (default), ``logger.mode``: ``offline`` (no account, no network; ``wandb sync
  <run dir>/wandb/offline-run-*`` uploads later), ``online`` (needs ``wandb login``; without a
  login or network the run falls back to ``offline`` with a warning) or ``disabled``.
* ``logger=none``: nothing is tracked.

Each job is one W&B run for its whole life: its id comes from the job's directory
(:func:`run_id_for`), so a job that is requeued, resubmitted or rerun in its directory resumes its
run (``resume="allow"``) instead of starting another; every start that ends writes an exit record
(``finish(exit_code=...)``, also when killed). ``job_type`` is the task, ``group`` names the study
and stage or the sweep (:func:`group_for`), tags are the task, model and dataset, and the config
is the resolved Hydra config. A job finishes its run before the next job of the same process
starts one.

Results are always written to disk first; every tracking call is guarded, so a W&B failure is a
warning on stderr, never a lost result or a failed job.

``tests/helpers/wandb_offline.py`` reads an offline run back without ``wandb sync`` or an account.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape_exp.config.sections import LoggerSettings
from landscape_exp.errors import UserError
from landscape_exp.io.provenance import file_sha256

MAX_TAG_LEN = 64  # W&B refuses longer tags (and with them the whole run)


class Tracker:
    """No-op tracker (``logger=none``, or W&B could not start); :class:`WandbTracker` overrides
    every method. Tasks call these unconditionally."""

    name = "none"

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar metrics as one history row (e.g. one training epoch)."""

    def log_images(self, paths: Sequence[Path], prefix: str = "") -> None:
        """Log the ``.png`` files among ``paths`` as images keyed ``<prefix><file stem>``."""

    def log_html(self, path: Path, key: str) -> None:
        """Log an HTML file (the interactive 3D view) under ``key``."""

    def log_curve(self, key: str, x: Sequence[float], ys: Mapping[str, Sequence[float]], xname: str = "x") -> None:
        """Log curves ``ys[name](x)`` as one table ``<key>/table`` and a line plot per curve."""

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Log a table (e.g. the comparison of runs)."""

    def update_config(self, values: Mapping[str, Any]) -> None:
        """Correct the run's config (e.g. the model actually analysed, taken from a checkpoint)."""

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set the run's summary values (nested mappings are flattened to ``a/b`` keys)."""

    def artifact(self, paths: Sequence[Path], name: str, kind: str) -> None:
        """Log the existing files among ``paths`` as one artifact ``<name>-<run id>`` of type ``kind``."""

    def attach_training(self, checkpoint: Path) -> None:
        """Attach the training history of a checkpoint this job did not train itself (a cached or
        given ``final.pt``): see :func:`training_history`."""

    def finish(self, exit_code: int = 0) -> None:
        """End the run (every job finishes its own run)."""


def run_id_for(job_dir: str | Path) -> str:
    """The W&B run id of the job in ``job_dir``: a hash of its absolute path, so every start of
    the same job (requeue, resubmission, a rerun in the same directory) is the same run."""
    return hashlib.sha256(str(Path(job_dir).resolve()).encode()).hexdigest()[:16]


def training_history(checkpoint: str | Path) -> tuple[list[dict[str, Any]], Path | None]:
    """The per-epoch metrics of the run that trained ``checkpoint`` (``<run>/checkpoints/*.pt``),
    and that run's directory: its ``history.json`` (a ``task=train`` job) or the history kept in
    its ``checkpoints/last.pt`` (the checkpoint cache). ``([], None)`` when there is none."""
    ckpt = Path(checkpoint)
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    if run is None:
        return [], None
    try:
        hist_file = run / "history.json"
        if hist_file.is_file():
            return list(json.loads(hist_file.read_text()).get("history", [])), run
        last = ckpt.parent / "last.pt"
        if last.is_file():
            from landscape_exp.io.checkpoint import load_checkpoint

            return list(load_checkpoint(last).get("history") or []), run
    except (OSError, ValueError, UserError):
        pass  # a history is a courtesy: the analysis goes on without it
    return [], run


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def _warn(what: str, e: BaseException, then: str = "results are on disk") -> None:
    msg = f"W&B {what} failed ({type(e).__name__}: {_one_line(e)}); {then}"
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _plain(v: Any) -> Any:
    """numpy/torch scalars -> Python numbers, so W&B stores numbers and not strings."""
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


def flatten_mapping(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (W&B groups ``a/...`` keys in one panel section)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_mapping(v, key + "/"))
        else:
            out[key] = _plain(v)
    return out


def tracked_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """What of ``summary.json`` goes to the tracker's run summary: the plain numbers and strings, and
    the ``measures`` (barriers, flatness, ... with their intervals), which the tracker flattens to
    ``measures/<name>/value``, ``.../ci_low``, ``.../ci_high`` so W&B can chart them across a sweep."""
    out = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
    if isinstance(summary.get("measures"), dict):
        out["measures"] = {name: {k: v for k, v in entry.items() if v is not None}
                           for name, entry in summary["measures"].items() if isinstance(entry, dict)}
    return out


class WandbTracker(Tracker):
    """A live W&B run; every call is guarded (a failure is one warning, the job goes on)."""

    name = "wandb"

    def __init__(self, run: Any, record: Path | None = None):
        self.run = run
        self.failures = 0
        self.record = record  # which artifact contents this job already uploaded (JSON)
        self.trained_here = False  # this job logged its own training epochs

    @property
    def local_dir(self) -> Path | None:
        """The run's local directory (``.../wandb/offline-run-<time>-<id>`` in offline mode)."""
        files = getattr(self.run, "dir", None)
        return Path(files).parent if files else None

    def _safe(self, what: str, fn: Callable[..., Any], *a: Any, **kw: Any) -> None:
        try:
            fn(*a, **kw)
        except Exception as e:  # tracking must never cost a result
            self.failures += 1
            _warn(what, e)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.trained_here = self.trained_here or any(str(k).startswith("train/") for k in metrics)
        self._safe("log", lambda: self.run.log(flatten_mapping(metrics), step=step))

    def log_images(self, paths: Sequence[Path], prefix: str = "") -> None:
        def go() -> None:
            import wandb

            imgs = {f"{prefix}{Path(p).stem}": wandb.Image(str(p)) for p in paths if str(p).endswith(".png")}
            if imgs:
                self.run.log(imgs)

        self._safe("image upload", go)

    def log_html(self, path: Path, key: str) -> None:
        def go() -> None:
            import wandb

            self.run.log({key: wandb.Html(Path(path).read_text())})

        self._safe("html upload", go)

    def log_curve(self, key: str, x: Sequence[float], ys: Mapping[str, Sequence[float]], xname: str = "x") -> None:
        def go() -> None:
            import wandb

            cols = [xname, *ys]
            rows = [[_cell(x[i]), *[_cell(v[i]) for v in ys.values()]] for i in range(len(x))]
            table = wandb.Table(columns=cols, data=rows)
            plots = {f"{key}/{c}": wandb.plot.line(table, xname, c, title=f"{key}: {c}") for c in ys}
            self.run.log({f"{key}/table": table, **plots})

        self._safe("curve upload", go)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        def go() -> None:
            import wandb

            self.run.log({key: wandb.Table(columns=list(columns), data=[[_cell(v) for v in r] for r in rows])})

        self._safe("table upload", go)

    def update_config(self, values: Mapping[str, Any]) -> None:
        self._safe("config update", lambda: self.run.config.update(dict(values), allow_val_change=True))

    def summary(self, values: Mapping[str, Any]) -> None:
        self._safe("summary", lambda: self.run.summary.update(flatten_mapping(values)))

    def artifact(self, paths: Sequence[Path], name: str, kind: str) -> None:
        def go() -> None:
            import wandb

            files = [Path(p) for p in paths if Path(p).is_file()]
            if not files:
                return
            # One artifact per run: the same name across runs would make unrelated surfaces
            # versions of one another.
            full = f"{name}-{self.run.id}"
            digest = _files_digest(files)
            done = self._uploaded()
            if done.get(full) == digest:  # a rerun that changed nothing: the upload is already there
                print(f"W&B artifact {full}: unchanged since its last upload, not uploaded again")
                return
            art = wandb.Artifact(name=full, type=kind)
            for p in files:
                art.add_file(str(p))
            self.run.log_artifact(art)
            if self.record is not None:
                from landscape_exp.io.files import write_json

                write_json(self.record, {**done, full: digest})

        self._safe("artifact upload", go)

    def _uploaded(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.record.read_text())) if self.record and self.record.is_file() else {}
        except (OSError, ValueError):
            return {}

    def attach_training(self, checkpoint: Path) -> None:
        if self.trained_here:
            return
        hist, run = training_history(checkpoint)
        if run is None:
            return
        # the run that trained it, by its directory and (deterministic) W&B id, as a link
        self.update_config({"trained_by": {"run_dir": str(run), "wandb_id": run_id_for(run)}})
        for row in hist:
            self.log({f"train/{k}": v for k, v in row.items()})

    def finish(self, exit_code: int = 0) -> None:
        self._safe("finish", self.run.finish, exit_code=exit_code)


def _files_digest(files: Sequence[Path]) -> str:
    """One hash over the files' names and contents (a renamed file is a change too)."""
    return hashlib.sha256("".join(f"{p.name}\0{file_sha256(p)}\n" for p in files).encode()).hexdigest()


def _cell(v: Any) -> Any:
    """A table cell: numbers stay numbers (NaN/inf become None: W&B tables reject them), lists
    and mappings become JSON text (a column must hold one type)."""
    v = _plain(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple, Mapping)):
        return json.dumps(v, default=str)
    return v


def _tags(tags: Sequence[Any]) -> list[str]:
    out: list[str] = []
    for t in tags:
        s = str(t).strip()[:MAX_TAG_LEN]
        if s and s not in out:
            out.append(s)
    return out


def make_tracker(
    cfg: LoggerSettings | Mapping[str, Any],
    *,
    run_dir: Path,
    config: Mapping[str, Any],
    job_type: str,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    run_id: str | None = None,
    alongside: bool = False,
) -> Tracker:
    """Start the tracker of one job (``cfg``: the resolved ``logger`` group).

    Args:
        cfg: ``name`` (wandb | none), ``mode`` (offline | online | disabled), ``project``,
            ``entity``, ``group`` (null: ``group``), ``tags`` (added to ``tags``), ``dir`` (null:
            ``run_dir``), ``init_timeout`` (seconds, default 90).
        run_dir: the job's output directory (the W&B files go to ``<dir>/wandb``).
        config: the resolved job config, stored as the run's config.
        job_type: the task name.
        name: the run's display name (the job's overrides).
        group: the multirun's sweep directory name (None for a single run).
        tags: extra tags (task, model, dataset).
        run_id: the run's id (:func:`run_id_for` of the job directory): a run with this id is
            resumed (``resume="allow"``), so every start of one job is one run.
        alongside: start this run next to the process's current one (the merged surface's run,
            started by the shard job that merged it) instead of finishing that one first.

    A bad ``name``/``mode`` is a UserError; any failure to start W&B is a warning and returns
    the no-op :class:`Tracker`. ``online`` without a login or network falls back to ``offline``.
    """
    log = LoggerSettings.of(cfg)
    if log.name == "none":
        return Tracker()
    mode, timeout = log.mode, log.init_timeout
    kwargs = dict(
        project=log.project,
        entity=log.entity,
        config=dict(config),
        job_type=job_type,
        group=log.group or group,
        name=name,
        tags=_tags([*tags, *log.tags]),
        reinit="create_new" if alongside else "finish_previous",
    )
    if run_id:
        kwargs.update(id=run_id, resume="allow")
    wdir = Path(str(log.dir or run_dir))
    record = wdir / "wandb" / "uploaded_artifacts.json"
    try:
        wdir.mkdir(parents=True, exist_ok=True)
        return WandbTracker(_init(mode, wdir, timeout, kwargs), record)
    except Exception as e:
        if mode != "online":
            _warn("init", e, "nothing is tracked; results are on disk")
            return Tracker()
        _warn("online init", e, "logging offline instead (`wandb login`, then `wandb sync` uploads it)")
    try:
        return WandbTracker(_init("offline", wdir, timeout, kwargs), record)
    except Exception as e:
        _warn("offline init", e, "nothing is tracked; results are on disk")
        return Tracker()


def _init(mode: str, wdir: Path, timeout: float, kwargs: Mapping[str, Any]) -> Any:
    import wandb

    return wandb.init(
        mode=mode,
        dir=str(wdir),
        # reinit: a sweep runs its jobs one after another in one process: each job must have its
        # own run, so a run left open (a crashed job) is finished first ("finish_previous")
        settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, init_timeout=timeout),
        **kwargs,
    )
