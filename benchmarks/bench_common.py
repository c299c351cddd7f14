"""What the benchmark scripts share: the model they time and a device sync for honest timing."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from landscape_exp.data import ImageDataset
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
        from landscape_exp.checkpoint import load_model

        model, _ = load_model(checkpoint)
    else:
        model = build_model(model_cfg(name, ds.channels, ds.image_size, ds.num_classes))
    return model.to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
