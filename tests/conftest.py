"""Shared fixtures: one thread, W&B off, tiny trained checkpoints, Hydra configs in tmp dirs.

Everything here is small on purpose (2 shared CPU cores): MLPs with 16 hidden units and LeNet on
scikit-learn's 8x8 digits, trained for a couple of epochs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
RUN_PY = ROOT / "run.py"
# Environment variables that would redirect data, cache or outputs away from the test's tmp dir.
PATH_ENV = ("LANDSCAPE_ROOT", "LANDSCAPE_DATA", "LANDSCAPE_CACHE", "LANDSCAPE_OUTPUT")


@pytest.fixture(scope="session", autouse=True)
def _quiet_single_thread() -> Iterator[None]:
    """One torch thread (the machine is shared) and no W&B, restored afterwards."""
    threads = torch.get_num_threads()
    old_mode = os.environ.get("WANDB_MODE")
    torch.set_num_threads(1)
    os.environ["WANDB_MODE"] = "disabled"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if old_mode is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = old_mode


def mlp_cfg(hidden: Sequence[int] = (16,), *, channels: int = 1, image_size: int = 8, num_classes: int = 10) -> dict[str, Any]:
    """The resolved model config of ``conf/model/mlp.yaml`` for digits-shaped inputs."""
    return {"_target_": "landscape_exp.models.small.mlp", "name": "mlp", "hidden": list(hidden),
            "num_classes": num_classes, "in_channels": channels, "image_size": image_size}


def lenet_cfg(*, channels: int = 1, image_size: int = 8, num_classes: int = 10) -> dict[str, Any]:
    return {"_target_": "landscape_exp.models.small.lenet", "name": "lenet",
            "num_classes": num_classes, "in_channels": channels, "image_size": image_size}


DIGITS_CFG = {"name": "digits", "num_classes": 10, "channels": 1, "image_size": 8, "test_fraction": 0.2,
              "split_seed": 0, "raw": False, "mean": None, "std": None,
              "augment": {"crop_padding": 0, "hflip": False}}
QUICK_OPTIM = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
               "batch_size": 64, "epochs": 2, "schedule": "step", "milestones": None, "gamma": 0.1}


@pytest.fixture(scope="session")
def digits():
    from landscape_exp.data.datasets import load_dataset

    return load_dataset(dict(DIGITS_CFG))


def train_checkpoint(run_dir: Path, model_cfg: dict[str, Any], dataset: Any, *, seed: int, epochs: int = 2,
                     optim: dict[str, Any] | None = None) -> Path:
    """Train ``model_cfg`` on ``dataset`` with the library's trainer; returns ``final.pt``."""
    from landscape_exp.models import build_model
    from landscape_exp.training.loop import train_model

    torch.manual_seed(seed)
    model = build_model(model_cfg)
    o = dict(QUICK_OPTIM, epochs=epochs, **(optim or {}))
    res = train_model(model, dataset, o, run_dir=run_dir, model_cfg=model_cfg, device=torch.device("cpu"),
                      seed=seed, progress=False)
    return Path(res["final_checkpoint"])


@pytest.fixture(scope="session")
def mlp_ckpts(tmp_path_factory, digits) -> list[Path]:
    """Three MLP (16 hidden) checkpoints on digits, seeds 0, 1, 2 (same architecture)."""
    base = tmp_path_factory.mktemp("mlp_ckpts")
    return [train_checkpoint(base / f"seed{s}", mlp_cfg(), digits, seed=s) for s in range(3)]


@pytest.fixture(scope="session")
def lenet_ckpt(tmp_path_factory, digits) -> Path:
    """A LeNet checkpoint on digits (one epoch)."""
    return train_checkpoint(tmp_path_factory.mktemp("lenet_ckpt"), lenet_cfg(), digits, seed=0, epochs=1)


def compose_cfg(root: Path, overrides: Sequence[str] = ()) -> Any:
    """The job config Hydra would build for ``python run.py <overrides>``, with every path under
    ``root`` (data, cache, outputs) and without W&B or progress bars.

    ``paths.*`` are overridden explicitly, so neither the ``hydra:`` resolver nor the
    environment is consulted."""
    from hydra import compose, initialize_config_dir

    base = [f"paths.root={root}", f"paths.data_dir={root}/data", f"paths.cache_dir={root}/.cache",
            f"paths.output_dir={root}/outputs", "logger=none", "progress=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=base + list(overrides))


def run_cli(args: Sequence[str], cwd: Path, *, timeout: float = 300, extra_env: dict[str, str] | None = None,
            popen: bool = False, python_args: bool = False) -> Any:
    """``python run.py <args>`` in ``cwd`` with ``LANDSCAPE_ROOT=cwd`` (data, cache, outputs there);
    ``python_args=True`` runs ``python <args>`` instead (same environment)."""
    env = {k: v for k, v in os.environ.items() if k not in PATH_ENV}
    env.update(LANDSCAPE_ROOT=str(cwd), WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    cmd = [sys.executable, *args] if python_args else [sys.executable, str(RUN_PY), *args]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def partition() -> str:
    """The default partition of the running Slurm cluster; skips the test, with the reason, where
    no cluster answers ``sinfo`` (the slurm-marked modules use it)."""
    from helpers.slurm import cluster

    part, why = cluster()
    if part is None:
        pytest.skip(why)
    return part


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs two workers), the tests that submit to the one
    single-node Slurm cluster run on one worker, one after another: two of them at once would
    queue behind each other's jobs on its two CPUs."""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))
