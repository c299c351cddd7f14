"""What the benchmark scripts share: the model they time, a device sync for honest timing, the
configured defaults and what the machine is (CPU model, flags and probed features, load)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from landscape_exp.config.reader import Section
from landscape_exp.config.sections import EvalSettings
from landscape_exp.data.datasets import ImageDataset
from landscape_exp.engine import cpu
from landscape_exp.engine.batch import eval_batch_size
from landscape_exp.engine.precision import Precision, resolve_precision
from landscape_exp.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def model_cfg(name: str, channels: int, size: int, classes: int) -> dict:
    """``conf/model/<name>.yaml`` with the dataset's shape filled in."""
    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    cfg.num_classes, cfg.in_channels, cfg.image_size = classes, channels, size
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def bench_model(name: str, checkpoint: str | None, ds: ImageDataset, seed: int, device: torch.device) -> nn.Module:
    """The checkpoint's model if given, else ``name`` at a seeded random init; eval mode on ``device``."""
    torch.manual_seed(seed)
    if checkpoint:
        from landscape_exp.models.loading import load_model

        model, _ = load_model(checkpoint)
    else:
        model = build_model(model_cfg(name, ds.channels, ds.image_size, ds.num_classes))
    return model.to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def configured_defaults(device: torch.device) -> tuple[Precision, EvalSettings]:
    """The precision a run gets by default on ``device`` (conf/precision/auto.yaml) and the
    ``eval`` settings of conf/eval/default.yaml (how the evaluation batch is chosen)."""
    p = OmegaConf.load(ROOT / "conf" / "precision" / "auto.yaml")
    ev = OmegaConf.load(ROOT / "conf" / "eval" / "default.yaml")
    return (resolve_precision(p.mode, p.channels_last, p.compile, device, fold_bn=p.fold_bn),
            EvalSettings.read(Section(OmegaConf.to_container(ev), "eval")))


def configured_batch(name: str, ev: EvalSettings, device: torch.device, channels: int = 3, size: int = 32) -> int:
    """The evaluation batch a run of ``name`` gets by default on ``device`` (context.eval_batch_size)."""
    return eval_batch_size(ev, model_cfg(name, channels, size, 10), (channels, size, size), device)


def cpu_description() -> str:
    """The CPU as the engine's probe sees it (landscape_exp.engine.cpu): model, torch's capability, units."""
    return cpu.cpu_features().describe()


def cpu_record() -> dict:
    """Model, flags and the probed features, for a benchmark's JSON (figures are per CPU kind)."""
    return cpu.cpu_features().record()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (``uptime``)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []
