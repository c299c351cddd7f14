"""Job directories made by hand for task=compare (config, summary, surface file) and a recording tracker."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from landscape_exp.config.sections import PlotSettings
from landscape_exp.config.settings import Settings
from landscape_exp.io.files import write_json
from landscape_exp.io.provenance import file_sha256
from landscape_exp.job.tracking import Tracker
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.store import SurfaceFile

from conftest import compose_cfg

METRICS = ["train_loss", "train_acc", "test_loss", "test_acc"]


def plot_settings(tmp: Path) -> PlotSettings:
    """The default ``plot`` settings, as a compare job reads them."""
    cfg = OmegaConf.to_container(compose_cfg(tmp, ["task=compare"]), resolve=True)
    return Settings.from_config(cfg).plot


def write_job(d: Path, cfg: dict[str, Any], summary: dict[str, Any]) -> Path:
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), d / ".hydra" / "config.yaml")
    write_json(d / "summary.json", summary)
    return d


def write_surface(path: Path, ckpt: Path, task: str, base: float, curv: float, *, done: bool = True,
                  nan: bool = False, indices: list[int] | None = None) -> Path:
    """A surface file as the surface tasks write it: loss ``base + curv * |p|^2`` at each grid point."""
    grid = parse_grid("-1:1:5", "-1:1:5" if task == "surface2d" else None)
    attrs = {"task": task, "checkpoint": str(ckpt.resolve()), "model": "lenet", "dataset": "digits"}
    with SurfaceFile(path, grid, METRICS, fingerprint={"task": task, "checkpoint_sha256": file_sha256(ckpt)},
                     attrs=attrs, indices=indices) as f:
        for k in (f.pending() if done else []):
            r2 = float(np.sum(np.asarray(grid.point(k)) ** 2))
            v = math.nan if nan else base + curv * r2
            f.record(k, {"train_loss": v, "test_loss": v + 0.1, "train_acc": 99.0, "test_acc": 95.0})
    return path


def model_cfg(task: str, b: int, wd: float, **extra: Any) -> dict[str, Any]:
    return {"task": {"name": task}, "model": {"name": "lenet", "num_classes": 10}, "dataset": {"name": "digits"},
            "optim": {"name": "sgd", "batch_size": b, "weight_decay": wd, "lr": 0.1}, "seed": 0,
            "eval": {"loss": "crossentropy", "splits": ["train"]}, "paths": {"root": str(extra.pop("root", "/x"))},
            **extra}


class Recorder(Tracker):
    """A tracker that keeps what the task gives it."""

    def __init__(self) -> None:
        self.images: list[Path] = []
        self.tables: dict[str, tuple[list[str], list[list[Any]]]] = {}

    def log_images(self, paths, prefix: str = "") -> None:
        self.images += [Path(p) for p in paths]

    def log_table(self, key, columns, rows) -> None:
        self.tables[key] = (list(columns), [list(r) for r in rows])
