"""Running one job: read the resolved config into typed settings, build the context, dispatch the
task, save results.

``run.py`` (the Hydra entry point) passes in what it read from Hydra; this module never reads
Hydra's global state, so tests and other launchers can call :func:`run_job` directly. Below this
point nothing sees the config: tasks get :class:`landscape_exp.config.settings.Settings`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import torch
from omegaconf import DictConfig, OmegaConf

from landscape_exp.config.settings import Settings
from landscape_exp.config.tasks import SHARDED_TASKS
from landscape_exp.engine.cpu import cpu_threads
from landscape_exp.errors import UserError
from landscape_exp.format import duration
from landscape_exp.io.files import write_json
from landscape_exp.job.console import tee_to_log
from landscape_exp.job.context import RunContext
from landscape_exp.job.device import resolve_device
from landscape_exp.job.preflight import check_writable
from landscape_exp.job.tracking import make_tracker, run_id_for, tracked_summary
from landscape_exp.tasks import get_task


def run_job(cfg: DictConfig | Mapping[str, Any], *, output_dir: str | Path,
            job: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``cfg.task.name`` with outputs under ``output_dir``; returns the task's summary.

    ``cfg``: the composed config (interpolations are resolved here) or an already resolved mapping.

    The summary is written to ``<output_dir>/summary.json`` before it goes to the tracker.
    """
    job = dict(job or {})
    out = Path(output_dir)
    check_writable(out)
    container = cfg if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig) else _resolve(cfg)
    assert isinstance(container, dict)
    settings = Settings.from_config(container)
    task_name = settings.task
    task = get_task(task_name)
    worker = job.get("worker") or {}
    if worker and task_name not in SHARDED_TASKS:
        raise UserError(
            f"hydra.launcher.tasks_per_node x nodes = {worker['count']} workers per job split only surface tasks "
            f"({', '.join(SHARDED_TASKS)}), not task={task_name}; use tasks_per_node=1"
        )
    device = resolve_device(settings.device, local_rank=int(worker.get("local_rank", 0)))
    torch.set_num_threads(cpu_threads(settings.threads))  # threads: null = the CPUs this process may use
    tags = [task_name, str(settings.model.get("name", "")), str(settings.dataset.get("name", ""))]
    if task_name == "compare":  # it reads other runs: the default model and dataset would be wrong tags
        tags = [task_name]
    tracker = make_tracker(
        settings.logger, run_dir=out, config=container, job_type=task_name,
        name=job.get("name"), group=job.get("group"), tags=[t for t in tags if t], run_id=run_id_for(out),
    )
    ctx = RunContext(settings=settings, out_dir=out, device=device, tracker=tracker, job=job)
    t0 = time.perf_counter()
    try:
        with tee_to_log(out / "run.log"):
            summary = task(ctx)
    except BaseException as e:
        # the exit record, in W&B and on disk (the study's status reads it where Slurm keeps no accounting)
        code = exit_code(e)
        with contextlib.suppress(OSError):  # a full disk must not hide the job's own error
            write_json(out / "exit.json", {"exit_code": code, "time": time.time(),
                                           "reason": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"})
        tracker.finish(exit_code=code)
        raise
    summary = dict(summary)
    if ctx.adopted_model is not None:  # the checkpoint's model, not model=: compare reads it here
        summary["model_config"] = ctx.adopted_model
    summary["wall_seconds"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    write_json(out / "exit.json", {"exit_code": 0, "reason": "finished", "time": time.time()})
    line = closing_line(task_name, out, summary)
    print(line, flush=True)
    with contextlib.suppress(OSError), open(out / "run.log", "a") as log:
        log.write(line + "\n")
    tracker.summary(tracked_summary(summary))
    tracker.finish()
    return summary


def exit_code(e: BaseException) -> int:
    """The exit status a job ends with: a user error 2, Ctrl-C 130, ``sys.exit(n)`` n (SIGTERM:
    143, submitit's requeue: -1), anything else 1."""
    if isinstance(e, UserError):
        return 2
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else 1
    return 1


def _resolve(cfg: DictConfig) -> dict[str, Any]:
    """The config with interpolations resolved; a required value left unset (``???``) is one line."""
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    try:
        out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as e:
        # the unset key itself (full_key), or the one behind an interpolation (named in the text)
        m = re.search(r"Missing mandatory value: ([\w.]+)", str(e))
        key = m.group(1) if isinstance(e, InterpolationToMissingValueError) and m else (getattr(e, "full_key", "") or "a value")
        if key == "direction.file":
            hint = "(task=hessian writes <run dir>/hessian_directions.h5)"
        else:
            hint = "(it is ??? in the config)"
        raise UserError(f"{key} is required {hint}; set it with {key}=<...>") from None
    assert isinstance(out, dict)
    return out


def interrupted_message(output_dir: str | Path, cfg: DictConfig | Mapping[str, Any]) -> str:
    """What an interrupted job left on disk, in a few words (every point and epoch is saved as
    it completes, so a rerun in the same directory goes on from there)."""
    out = Path(output_dir)
    surf = cfg.get("surf_file")
    files = list(dict.fromkeys(([Path(str(surf))] if surf else []) + sorted(out.glob("*.h5"))))
    parts = []
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                done, total = h.attrs.get("num_done"), h.attrs.get("num_points")
                if done is not None and total is not None:
                    parts.append(f"{int(done)} of {int(total)} points in {f}")
                elif "epoch" in h:
                    parts.append(f"{len(h['epoch'])} epochs in {f}")
        except (OSError, KeyError, RuntimeError, ValueError):
            continue
    last = out / "checkpoints" / "last.pt"
    if last.is_file():
        parts.append(f"training up to the last finished epoch in {last}")
    return ", ".join(parts) if parts else f"nothing finished yet in {out}"


def closing_line(task_name: str, out: Path, summary: dict[str, Any]) -> str:
    """The job's last line: how long it took and where its results are, so nobody has to look for
    the dated output directory (``surface2d: done in 41 s; 18 figures, summary.json in <dir>``)."""
    figures = len(list(out.glob("*.png")))
    what = f"{figures} figure{'s' * (figures != 1)}, summary.json" if figures else "summary.json"
    return f"{task_name}: done in {duration(float(summary.get('wall_seconds', 0.0)))}; {what} in {out}"
