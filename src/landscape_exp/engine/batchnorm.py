"""BatchNorm running statistics: which layers keep them, saving them, and recomputing them from data.

A model moved in weight space (a surface point, a point on a curve) no longer matches the running
statistics it was trained with; Garipov et al. 2018 recompute them on the training data at every
evaluated point (``bn_update``), which ``eval.bn_recompute=true`` and the curve tasks do here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from landscape_exp.data.device import DeviceData
from landscape_exp.errors import UserError


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_layers(model))


def running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm running statistics of ``model`` by buffer name: live tensors, or clones to restore."""
    out = {}
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for bname, b in m.named_buffers(recurse=False):
                if b is not None:
                    out[f"{mname}.{bname}"] = b
    return out


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    data: DeviceData,
    *,
    batch_size: int = 1024,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Recompute every BatchNorm running mean and variance over ``data`` at the current weights.

    Running statistics are reset and averaged over one pass in train mode, each batch weighted by
    its size (momentum ``b / (n_seen + b)``, as Garipov et al.'s ``bn_update``), so the running
    mean is exactly the mean of the activations over the whole split whatever the batch size.
    The model is left in eval mode with its momenta restored. ``forward`` replaces ``model`` for
    the forward passes (it must run the same BatchNorm modules). Returns the number of
    BatchNorm layers updated (0: nothing to do, no pass is made).
    """
    bns = batchnorm_layers(model)
    if not bns:
        model.eval()
        return 0
    if batch_size < 1:
        raise UserError(f"batch size {batch_size} for BatchNorm statistics must be >= 1")
    momenta = [m.momentum for m in bns]
    fwd = forward or model
    try:
        for m in bns:
            m.reset_running_stats()
        model.train()
        seen = 0
        for x, _ in data.batches(batch_size):
            b = int(x.shape[0])
            if b < 2 and seen > 0:
                continue  # a batch of one has no variance; BatchNorm refuses it in train mode
            for m in bns:
                m.momentum = b / (seen + b)
            fwd(x)
            seen += b
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()
    return len(bns)
