"""What the benchmark scripts share: the model they time, a device sync for honest timing, the
configured defaults and what the machine is (CPU features, load)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from landscape_exp.data import ImageDataset
from landscape_exp.context import eval_batch_size
from landscape_exp.models import build_model
from landscape_exp.precision import Precision, resolve_precision
from landscape_exp.settings import EvalSettings, Section

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


def configured_defaults(device: torch.device) -> tuple[Precision, EvalSettings]:
    """The precision a run gets by default on ``device`` (conf/precision/auto.yaml) and the
    ``eval`` settings of conf/config.yaml (how the evaluation batch is chosen)."""
    p = OmegaConf.load(ROOT / "conf" / "precision" / "auto.yaml")
    cfg = OmegaConf.load(ROOT / "conf" / "config.yaml")
    return (resolve_precision(p.mode, p.channels_last, p.compile, device, fold_bn=p.fold_bn),
            EvalSettings.read(Section(OmegaConf.to_container(cfg.eval), "eval")))


def configured_batch(name: str, ev: EvalSettings, device: torch.device, channels: int = 3, size: int = 32) -> int:
    """The evaluation batch a run of ``name`` gets by default on ``device`` (context.eval_batch_size)."""
    return eval_batch_size(ev, model_cfg(name, channels, size, 10), (channels, size, size), device)


def cpu_features() -> str:
    """The CPU's model and its bf16 units, as /proc/cpuinfo and torch see them."""
    model, flags = platform_cpu()
    wanted = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}; {', '.join(wanted) or 'no AVX-512/AMX'}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def platform_cpu() -> tuple[str, set[str]]:
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (``uptime``)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []
