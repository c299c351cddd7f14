"""Hydra entry point: ``python run.py task=<task> model=<model> dataset=<dataset> ...``.

Reads what it needs from Hydra (output directory, job and sweep names) and hands a resolved
config to the library; user errors print one line and exit with status 2.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


def _job_info() -> dict:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    info = {"name": hc.job.override_dirname or hc.job.name, "multirun": multirun}
    if multirun:
        info["num"] = hc.job.num
        info["sweep_dir"] = str(hc.sweep.dir)
        info["group"] = Path(str(hc.sweep.dir)).name  # the sweep's name groups its W&B runs
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
    # Let `finally` blocks flush results on SIGTERM; leave the handler alone where someone
    # (submitit under Slurm) has installed their own.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    from landscape_exp.app import interrupted_message, run_job
    from landscape_exp.errors import UserError

    _sigterm_to_exit()
    try:
        job = _job_info()
        output_dir = HydraConfig.get().runtime.output_dir
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


if __name__ == "__main__":
    main()
