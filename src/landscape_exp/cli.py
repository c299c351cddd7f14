"""The command line: ``python run.py ...`` and the ``landscape-exp`` console script, Hydra's entry
point (:func:`main`).

This is the one module that reads Hydra's global state: the output directory, the job's and the
sweep's names and the submitit worker, handed to :func:`landscape_exp.app.run_job` as plain
values. User errors print one line and exit with status 2; Ctrl-C one line saying how to resume.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# The project's Hydra config groups (conf/ at the repository root; the package is installed editable).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# When this process began (its module import): a surface merged by a sibling worker after this is
# one this worker need not publish again (surface.job.run_surface).
_PROCESS_STARTED = time.time()


def _unescape(override: str) -> str:
    return re.sub(r"\\(.)", r"\1", override)  # Hydra re-escapes ':' '=' ',' ... in the job's overrides


def _swept(hc: Any) -> list[str]:
    """This job's overrides of the keys the multirun sweeps (``optim.batch_size=32``), as typed:
    the sweep is read from ``<sweep dir>/multirun.yaml`` (the command line) and
    ``hydra.sweeper.params`` (a sweep config)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    raw: list[str] = []
    saved = Path(str(hc.sweep.dir)) / "multirun.yaml"
    try:
        if saved.is_file():
            raw += [str(o) for o in OmegaConf.load(saved).hydra.overrides.task]
        raw += [f"{k}={v}" for k, v in (hc.sweeper.get("params") or {}).items()]
        parser = OverridesParser.create()
        keys = {o.get_key_element() for o in parser.parse_overrides(raw) if o.is_sweep_override()}
        mine = parser.parse_overrides(list(hc.overrides.task))
    except Exception:  # an unusual sweeper: fall back to every override
        return [_unescape(o) for o in hc.overrides.task]
    return [_unescape(f"{o.get_key_element()}={o.get_value_element_as_str()}") for o in mine if o.get_key_element() in keys]


def _job_info(cfg: DictConfig) -> dict:
    from landscape_exp.cluster.launches import group_for
    from landscape_exp.config.tasks import SHARDED_TASKS
    from landscape_exp.surface.sharding import merged_dir_name

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = [_unescape(o) for o in hc.overrides.task]
    # the W&B display name: the overrides as typed (Hydra's override_dirname escapes ':' and '=')
    info = {"name": " ".join(overrides) or str(cfg.task.name), "multirun": multirun, "process_started": _PROCESS_STARTED}
    if multirun:
        sweep_dir = Path(str(hc.sweep.dir))
        job_dir = Path(hc.runtime.output_dir)
        swept = _swept(hc)
        info["num"] = hc.job.num
        info["sweep_dir"] = str(sweep_dir)
        info["group"] = group_for(sweep_dir)  # <study>/<stage>, or the sweep's place under multirun/
        info["name"] = " ".join(swept) or info["name"]  # what tells this job from the others
        if job_dir.resolve() == sweep_dir.resolve():  # a one-job stage (a study's compare): the stage's name
            info["name"] = info["group"]
        elif not job_dir.name.isdigit():  # a study names its jobs: that reads best
            info["name"] = job_dir.relative_to(sweep_dir).as_posix() if job_dir.is_relative_to(sweep_dir) else job_dir.name
        if int(cfg.shard.count) > 1 and str(cfg.task.name) in SHARDED_TASKS:
            # Where the shards of this job's surface meet, with its figures, summary and W&B run.
            # A job directory named without the shard (a study's `surface2d_bs32_wd0`) is shared by
            # the shards: the surface lives there and each shard in shard-<i>/. Otherwise (numbered
            # jobs, names with the shard) the surface gets a directory named by its swept values.
            subdir = str(OmegaConf.to_container(hc.sweep, resolve=False).get("subdir", ""))
            if any(k in subdir for k in ("shard", "job.num", "override_dirname")):
                info["surface_home"] = str(sweep_dir / merged_dir_name(swept))
            else:
                info["surface_home"] = str(job_dir)
                info["shard_dir"] = f"shard-{int(cfg.shard.index)}"
                info["name"] = f"{info['name']}/{info['shard_dir']}"
    worker = _worker()
    if worker is not None:
        info["worker"] = worker
    return info


def _worker() -> dict | None:
    """This process's place among the tasks of one submitit job (hydra.launcher.tasks_per_node x
    nodes > 1), or None: each task runs this same job and takes its own shard of a surface."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return None
    return {"rank": env.global_rank, "local_rank": env.local_rank, "count": env.num_tasks}


def _sigterm_to_exit() -> None:
    # SIGTERM ends the job through `finally` blocks, so results are flushed and the W&B run gets
    # its exit record. Under Slurm (scancel, scontrol requeue, the time limit, preemption) SIGTERM
    # is followed by SIGKILL after KillWait seconds; submitit's own handler only logs "Bypassing
    # signal SIGTERM" and waits for that kill. Jobs are submitted with --requeue, so Slurm itself
    # requeues a preempted job; submitit's checkpoint-and-requeue on SIGUSR2 is left as it is.
    handler = signal.getsignal(signal.SIGTERM)
    if handler in (signal.SIG_DFL, None) or getattr(handler, "__name__", "") == "bypass":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# conf/hydra/launcher/submitit_*.yaml shadow the plugin's schemas of the same name on purpose (so
# `hydra/launcher=submitit_slurm` gets the project's defaults); Hydra warns about it on every run.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    from landscape_exp.app import interrupted_message, run_job
    from landscape_exp.errors import UserError

    _sigterm_to_exit()
    try:
        job = _job_info(cfg)
        output_dir = HydraConfig.get().runtime.output_dir
        if "shard_dir" in job:  # shards that share their job directory: one subdirectory each
            output_dir = os.path.join(output_dir, job["shard_dir"])
        if "worker" in job:  # the tasks of one job share Hydra's output dir: one subdir each
            job["job_dir"] = output_dir
            output_dir = os.path.join(output_dir, f"worker-{job['worker']['rank']}")
        return run_job(cfg, output_dir=output_dir, job=job)
    except KeyboardInterrupt:
        if os.environ.get("SUBMITIT_EXECUTOR"):
            raise
        # One line instead of a traceback: what is on disk, and the command that resumes.
        hc = HydraConfig.get()
        rerun = " ".join(["python run.py", *hc.overrides.task, f"hydra.run.dir={hc.runtime.output_dir}"])
        print(f"\ninterrupted: {interrupted_message(hc.runtime.output_dir, cfg)}; resume with: {rerun}",
              file=sys.stderr, flush=True)
        sys.exit(130)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if os.environ.get("SUBMITIT_EXECUTOR"):
            # a submitit job must end with a result, here the error: after a bare exit its
            # launcher waits for ever where Slurm has no accounting (sacct) to say the job died
            raise
        sys.exit(2)


