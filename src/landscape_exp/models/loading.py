"""A model rebuilt from a checkpoint: the zoo (or a trusted ``_target_``) builds it from the
checkpoint's own config, then its state_dict is checked and loaded."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import check_state_dict, load_checkpoint
from landscape_exp.models import build_model


def model_from_checkpoint(
    ckpt: Mapping[str, Any], source: str, model_cfg: Mapping[str, Any] | None = None, *, trusted: Collection[str] = ()
) -> nn.Module:
    """Rebuild a checkpoint's model (from its own config unless ``model_cfg`` is given) and load
    its weights strictly; the model is returned in eval mode on the CPU. ``trusted``: model
    ``_target_`` paths outside the zoo that the user named (see :func:`models.build_model`)."""
    cfg = ckpt.get("model_cfg") if model_cfg is None else model_cfg
    if cfg is None:
        raise UserError(f"{source} carries no model config; choose the model with model=<name>")
    model = build_model(cfg, trusted=trusted)
    check_state_dict(model, ckpt["state_dict"], source)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_model(
    path: str | Path, model_cfg: Mapping[str, Any] | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint file and rebuild its model on ``device`` in eval mode."""
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, f"checkpoint {str(path)!r}", model_cfg).to(device), ckpt
