"""Running one job: read the resolved config into typed settings, build the context, dispatch the
task, save results.

``run.py`` (the Hydra entry point) passes in what it read from Hydra; this module never reads
Hydra's global state, so tests and other launchers can call :func:`run_job` directly. Below this
point nothing sees the config: tasks get :class:`landscape_exp.settings.Settings`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from landscape_exp.context import RunContext, resolve_device
from landscape_exp.errors import UserError
from landscape_exp.resources import check_writable
from landscape_exp.settings import Settings
from landscape_exp.storage import write_json
from landscape_exp.tasks import get_task
from landscape_exp.tracking import make_tracker

# tasks whose work the workers of one job (submitit tasks_per_node) split as shards of a surface
SHARDED_TASKS = ("surface1d", "surface2d", "interp1d", "plane")


def run_job(cfg: DictConfig | Mapping[str, Any], *, output_dir: str | Path, job: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``cfg.task.name`` with outputs under ``output_dir``; returns the task's summary.

    ``cfg``: the composed config (interpolations are resolved here) or an already resolved mapping.

    The summary is written to ``<output_dir>/summary.json`` before it goes to the tracker.
    """
    job = dict(job or {})
    out = Path(output_dir)
    check_writable(out)
    container = cfg if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig) else OmegaConf.to_container(cfg, resolve=True)
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
    if settings.threads:
        torch.set_num_threads(settings.threads)
    tags = [task_name, str(settings.model.get("name", "")), str(settings.dataset.get("name", ""))]
    tracker = make_tracker(
        settings.logger, run_dir=out, config=container, job_type=task_name,
        name=job.get("name"), group=job.get("group"), tags=[t for t in tags if t],
    )
    ctx = RunContext(settings=settings, out_dir=out, device=device, tracker=tracker, job=job)
    t0 = time.perf_counter()
    try:
        summary = task(ctx)
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    summary = dict(summary)
    summary["wall_seconds"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    tracker.summary({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    tracker.finish()
    return summary
