"""Hydra entry point: ``python run.py task=<task> model=<model> dataset=<dataset> ...``.

Reads what it needs from Hydra (output directory, job and sweep names) and hands a resolved
config to the library; user errors print one line and exit with status 2.
"""

from __future__ import annotations

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
    return info


def _sigterm_to_exit() -> None:
    # Let `finally` blocks flush results on SIGTERM; leave the handler alone where someone
    # (submitit under Slurm) has installed their own.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    from landscape_exp.app import run_job
    from landscape_exp.errors import UserError

    _sigterm_to_exit()
    try:
        return run_job(cfg, output_dir=HydraConfig.get().runtime.output_dir, job=_job_info())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
