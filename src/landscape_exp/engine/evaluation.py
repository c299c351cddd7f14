"""Loss and accuracy of a model over a device-resident split: the surface engine's inner loop.

No host synchronisation inside the batch loop: sums accumulate on the device and are read once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import nn

from landscape_exp.config.choices import LOSSES
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.precision import Precision, precision_context
from landscape_exp.errors import choice_error


def summed_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Sum over the batch of per-sample losses (see :func:`summed_loss_per_sample`), in fp32."""
    return summed_loss_per_sample(logits, targets, loss).sum()


def mean_loss_fn(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-batch mean of the same loss, for training and Hessian-vector products."""
    if loss not in LOSSES:
        raise choice_error("loss", loss, LOSSES)
    return lambda logits, targets: summed_loss(logits, targets, loss) / targets.shape[0]


@torch.no_grad()
def evaluate_sums(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    data: DeviceData,
    *,
    loss: str = "crossentropy",
    batch_size: int = 1024,
    precision: Precision = Precision(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Device tensors (summed loss, number correct) over the whole split."""
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    with precision_context(precision, data.device):
        for x, y in data.batches(batch_size):
            logits = model(x)
            # per-sample losses summed in float64: the batch size changes no more than rounding
            total += summed_loss_per_sample(logits, y, loss).double().sum()
            correct += (logits.argmax(dim=1) == y).sum()
    return total, correct


class EvalOptions(TypedDict, total=False):
    """The keyword options of :func:`evaluate_sums` (which holds their defaults)."""

    loss: str
    batch_size: int
    precision: Precision


def evaluate(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor], data: DeviceData, **options: Unpack[EvalOptions]
) -> tuple[float, float]:
    """(mean loss, accuracy in percent) over ``data``; the model should be in eval mode."""
    total, correct = evaluate_sums(model, data, **options)
    n = len(data)
    return float(total) / n, 100.0 * float(correct) / n


@torch.no_grad()
def evaluate_points_sums(
    model: nn.Module,
    stacked: dict[str, torch.Tensor],
    data: DeviceData,
    *,
    loss: str = "crossentropy",
    batch_size: int = 1024,
    precision: Precision = Precision(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and number correct at ``P`` weight settings in one pass.

    ``stacked`` maps tensor names (parameters and/or buffers) to ``(P, *shape)`` tensors; the
    model is run with ``torch.func.functional_call`` under ``vmap`` over that leading dimension,
    so small models fill the machine with several grid points per batch. Returns ``(P,)`` tensors.
    """
    from torch.func import functional_call, vmap

    p = next(iter(stacked.values())).shape[0]

    def one(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, weights, (x,))

    batched = vmap(one, in_dims=(0, None))
    total = torch.zeros(p, dtype=torch.float64, device=data.device)
    correct = torch.zeros(p, dtype=torch.int64, device=data.device)
    with precision_context(precision, data.device):
        for x, y in data.batches(batch_size):
            logits = batched(stacked, x).float()  # (P, B, C)
            flat = logits.reshape(-1, logits.shape[-1])
            per = summed_loss_per_sample(flat, y.repeat(p), loss).view(p, -1)
            total += per.double().sum(1)
            correct += (logits.argmax(-1) == y.unsqueeze(0)).sum(1)
    return total, correct


def summed_loss_per_sample(logits: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-sample losses in fp32.

    ``mse`` follows the original tool: mean squared error between softmax(logits) and one-hot
    targets, averaged over classes for each sample.
    """
    logits = logits.float()
    if loss == "crossentropy":
        return F.cross_entropy(logits, targets, reduction="none")
    if loss == "mse":
        onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return (F.softmax(logits, dim=1) - onehot).pow(2).mean(dim=1)
    raise choice_error("loss", loss, LOSSES)
