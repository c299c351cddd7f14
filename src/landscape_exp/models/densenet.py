"""DenseNet-BC for CIFAR, as in the original tool (tomgoldstein/loss-landscape
``cifar10/models/densenet.py``, itself the common kuangliu/pytorch-cifar variant).

A bare 3x3 stem conv to 2*growth channels (no BN/ReLU/pool after it), dense blocks of
bottleneck layers (BN-ReLU-conv1x1 to 4*growth, BN-ReLU-conv3x3 to growth, output concatenated
*before* the input), transitions (BN-ReLU-conv1x1 compressing channels by ``reduction``, rounding
down, then 2x2 average pooling) between blocks, and a final BN-ReLU, global average pooling and
linear classifier. DenseNet-121 = blocks (6, 12, 24, 16), growth 32: 6,956,298 parameters on
CIFAR-10. Module names (conv1, dense1.., trans1.., bn, linear) and their order match the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.models.registry import CIFAR10, register_builder, variant
from landscape_exp.models.small import check_io, init_like_original, positive_int


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1(4g) -> BN-ReLU-conv3x3(g); returns ``cat([new, x])`` (g more channels)."""

    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer and concatenate its output in front of its input (original order)."""
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (channel compression) then 2x2 average pooling (halves the side)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the transition."""
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """Stem conv, dense blocks ``dense1..`` separated by transitions ``trans1..``, BN, linear."""

    def __init__(
        self,
        blocks: Sequence[int],
        growth_rate: int,
        reduction: float,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.n_blocks = len(blocks)
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=3, padding=1, bias=False)
        # setattr keeps the original's attribute names (dense1, trans1, ...) for any block count.
        for i, n_layers in enumerate(blocks, start=1):
            layers = [Bottleneck(planes + j * growth_rate, growth_rate) for j in range(n_layers)]
            setattr(self, f"dense{i}", nn.Sequential(*layers))
            planes += n_layers * growth_rate
            if i < self.n_blocks:
                out_planes = int(math.floor(planes * reduction))
                setattr(self, f"trans{i}", Transition(planes, out_planes))
                planes = out_planes
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        out = self.conv1(x)
        for i in range(1, self.n_blocks + 1):
            out = getattr(self, f"dense{i}")(out)
            if i < self.n_blocks:
                out = getattr(self, f"trans{i}")(out)
        # The original pools a 4x4 map with avg_pool2d(., 4): global on 32x32 inputs.
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.linear(torch.flatten(out, 1))


def densenet(
    *,
    blocks: Sequence[int] = (6, 12, 24, 16),
    growth_rate: int = 32,
    reduction: float = 0.5,
    num_classes: int,
    in_channels: int,
    image_size: int,
) -> DenseNet:
    """Build a CIFAR DenseNet-BC (defaults: DenseNet-121), initialised like the original tool.

    ``blocks`` gives the bottleneck layers per dense block, ``reduction`` the transition
    compression in (0, 1]. Each of the len(blocks)-1 transitions halves the side (rounding
    down), so ``image_size`` must be at least 2**(len(blocks)-1): 8 for DenseNet-121.
    """
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence) or len(blocks) == 0:
        raise UserError(f"model densenet blocks must be a non-empty list of positive integers, got {blocks!r}")
    counts = [positive_int("densenet block size", b) for b in blocks]
    nc, ic, _ = check_io("densenet", num_classes, in_channels, image_size, 2 ** (len(counts) - 1))
    growth = positive_int("growth_rate", growth_rate)
    if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or not 0 < reduction <= 1:
        raise UserError(f"model densenet reduction must be in (0, 1], got {reduction!r}")
    return init_like_original(DenseNet(counts, growth, float(reduction), nc, ic))


@register_builder(variant("densenet121"), data=CIFAR10)
def densenet121(*, num_classes: int, in_channels: int, image_size: int) -> DenseNet:
    """Build the CIFAR DenseNet-121 (the original tool's ``DenseNet121``): blocks (6, 12, 24, 16),
    growth rate 32, compression 0.5. 6,956,298 parameters on CIFAR-10; needs image_size >= 8."""
    return densenet(
        blocks=(6, 12, 24, 16),
        growth_rate=32,
        reduction=0.5,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
    )
