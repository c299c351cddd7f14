"""CIFAR ResNets of He et al. 2016 and their no-skip / wide variants, as in the original tool.

Matches ``ResNet_cifar`` / ``WResNet_cifar`` of tomgoldstein/loss-landscape
``cifar10/models/resnet.py``: a 3x3 stem conv (16k channels) + BN + ReLU, three stages of
(depth-2)/6 basic blocks with 16k, 32k, 64k channels (strides 1, 2, 2), global average pooling
and a linear classifier. Where a block changes shape, the shortcut is a 1x1 conv + BN
projection ("option B"); He et al.'s published counts (0.27M/0.85M/1.7M) use parameter-free
zero-padding ("option A"), so these nets carry 2,752 more parameters at width 1.

``shortcut=False`` gives the original's ``BasicBlock_noshortcut``: the same two conv-BN layers
and final ReLU, with no identity or projection added and no projection parameters at all.

Module names and registration order match the original, so its checkpoints' state-dict keys and
per-parameter direction files line up one to one. The original ends with ``avg_pool2d(out, 8)``
(global on 32x32 inputs); adaptive pooling is identical there and works at any input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.models.registry import CIFAR10, register_builder, variant
from landscape_exp.models.small import check_io, init_like_original, positive_int


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``.

    With ``shortcut=False`` the addition (and any projection module) is absent.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.has_shortcut = shortcut
        if shortcut:
            # Identity is an empty Sequential (no state), as in the original; a projection when
            # the spatial size or channel count changes.
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.has_shortcut:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """Stem conv + three stages of basic blocks + global average pool + linear classifier."""

    def __init__(
        self, blocks_per_stage: int, width: int, shortcut: bool, num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        self.in_planes = 16 * width
        self.conv1 = nn.Conv2d(in_channels, 16 * width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16 * width)
        self.layer1 = self._make_layer(16 * width, blocks_per_stage, 1, shortcut)
        self.layer2 = self._make_layer(32 * width, blocks_per_stage, 2, shortcut)
        self.layer3 = self._make_layer(64 * width, blocks_per_stage, 2, shortcut)
        self.linear = nn.Linear(64 * width, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int, shortcut: bool) -> nn.Sequential:
        """One stage: the first block may down-sample, the rest keep the shape."""
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s, shortcut))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


# He et al.'s ResNet-20/56/110 and the original tool's wide ResNet-56s: (name, depth, width), each
# registered with skips and without (``<name>_noshort``), as the files of conf/model/ name them.
_RESNETS = (("resnet20", 20, 1), ("resnet56", 56, 1), ("resnet110", 110, 1),
            ("wrn56_2", 56, 2), ("wrn56_4", 56, 4), ("wrn56_8", 56, 8))


@register_builder(
    *(variant(f"{name}{tail}", depth=depth, width=width, shortcut=not tail)
      for name, depth, width in _RESNETS for tail in ("", "_noshort")),
    data=CIFAR10,
)
def cifar_resnet(
    *,
    depth: int,
    width: int = 1,
    shortcut: bool = True,
    num_classes: int,
    in_channels: int,
    image_size: int,
) -> CifarResNet:
    """Build a CIFAR ResNet-``depth`` (depth = 6n+2: 20, 56, 110, ...) with width multiplier
    ``width`` (1 = He et al.; 2/4/8 = the original tool's WRN56-k) and skip connections on or
    off, initialised like the original tool (Kaiming-normal convs, see ``init_like_original``).

    ``image_size`` only validates the input; global pooling makes any size >= 1 work.
    """
    nc, ic, _ = check_io(f"resnet{depth}", num_classes, in_channels, image_size)
    depth = positive_int("depth", depth)
    if depth < 8 or (depth - 2) % 6 != 0:
        raise UserError(f"model resnet depth must be 6n+2 with n >= 1 (8, 14, 20, 56, 110, ...), got {depth}")
    width = positive_int("width", width)
    if not isinstance(shortcut, bool):
        raise UserError(f"model resnet shortcut must be true or false, got {shortcut!r}")
    return init_like_original(CifarResNet((depth - 2) // 6, width, shortcut, nc, ic))
