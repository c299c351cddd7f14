"""Tiny jobs run in process with W&B tracking (their config composed under a tmp root), and their finished offline runs."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import CONF_DIR
from helpers.wandb_offline import read_offline_run

TINY = ["model=mlp", "dataset=digits", "optim.epochs=2", "x=-1:1:5", "progress=false"]


def compose(root: Path, overrides: list[str]):
    """The job config of ``python run.py <overrides>`` with every path under ``root``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    base = [f"paths.root={root}", f"paths.data_dir={root}/data", f"paths.cache_dir={root}/.cache",
            f"paths.output_dir={root}/outputs"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=base + overrides)


def read_finished(run_dir: Path, timeout: float = 20.0) -> dict:
    """The offline run once its exit record is on disk: W&B's service writes the end of the
    file shortly after ``finish()`` returns (at the latest when the process exits)."""
    deadline = time.monotonic() + timeout
    while True:
        r = read_offline_run(run_dir)
        if r["exit_code"] is not None or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def run(root: Path, out: Path, overrides: list[str], job: dict | None = None) -> dict:
    from landscape_exp.app import run_job

    cfg = compose(root, TINY + overrides)
    return run_job(cfg, output_dir=out, job=job or {"name": out.name, "multirun": False})
