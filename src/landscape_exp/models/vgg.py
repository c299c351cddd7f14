"""VGG with batch norm, as in the original tool (tomgoldstein/loss-landscape ``cifar10/models/vgg.py``).

VGG-9 is the network of Li et al. 2018, section 5 (batch size / weight decay experiments):
conv3x3 64, 64, pool, 128, 128, pool, 256, 256, 256, pool (each conv with bias, then
BatchNorm2d and ReLU), then ``fc`` = Linear(flat, 256) -> BatchNorm1d -> ReLU and a linear
``classifier``. Module names and registration order match the original, so its checkpoints'
state-dict keys and its per-parameter direction files (datasets "0", "1", ...) line up one to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from landscape_exp.errors import choice_error
from landscape_exp.models.registry import CIFAR10, register_builder, variant
from landscape_exp.models.small import check_io, init_like_original

#: Layer lists of the original tool: ints are conv widths, "M" a 2x2 max-pool.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg9": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ),
}  # fmt: skip


def vgg_feature_size(image_size: int, layers: tuple[int | str, ...]) -> int:
    """Side of the last feature map: 3x3 convs keep the size, each ceil-mode 2x2 pool maps
    s -> ceil(s/2) (the original uses ceil_mode=True, so odd sides such as 7 keep their edge)."""
    side = image_size
    for item in layers:
        if item == "M":
            side = math.ceil(side / 2)
    return side


class VGG(nn.Module):
    """VGG feature stack + one hidden fully connected layer (with BatchNorm1d) + classifier."""

    def __init__(
        self, layers: tuple[int | str, ...], num_classes: int, in_channels: int, image_size: int
    ) -> None:
        super().__init__()
        self.features = self._make_features(layers, in_channels)
        n_maps = int(layers[-2])  # the original's width of the last conv ("M" is last)
        side = vgg_feature_size(image_size, layers)
        self.fc = nn.Sequential(
            nn.Linear(n_maps * side * side, n_maps), nn.BatchNorm1d(n_maps), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Linear(n_maps, num_classes)

    @staticmethod
    def _make_features(layers: tuple[int | str, ...], in_channels: int) -> nn.Sequential:
        """Conv(bias) -> BN -> ReLU per int, ceil-mode max-pool per "M" (original order)."""
        modules: list[nn.Module] = []
        channels = in_channels
        for item in layers:
            if item == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                width = int(item)
                modules += [
                    nn.Conv2d(channels, width, kernel_size=3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        out = torch.flatten(self.features(x), 1)
        return self.classifier(self.fc(out))


def vgg(*, variant: str = "vgg9", num_classes: int, in_channels: int, image_size: int) -> VGG:
    """Build a VGG of the original tool (``variant``: vgg9, vgg16 or vgg19), initialised with
    the original tool's ``init_params`` (see ``init_like_original``).

    The flatten size follows from ``image_size``: VGG-9 on 32x32 CIFAR flattens 256x4x4, on 8x8
    digits 256x1x1, on 28x28 MNIST 256x4x4 (28 -> 14 -> 7 -> 4 with ceil-mode pooling).
    Note: the hidden BatchNorm1d needs batches of 2 or more in training mode.
    """
    if variant not in VGG_CONFIGS:
        raise choice_error("vgg variant", variant, list(VGG_CONFIGS))
    nc, ic, size = check_io(variant, num_classes, in_channels, image_size)
    return init_like_original(VGG(VGG_CONFIGS[variant], nc, ic, size))


@register_builder(variant("vgg9"), data=CIFAR10)
def vgg9(*, num_classes: int, in_channels: int, image_size: int) -> VGG:
    """Build the VGG-9 of Li et al. 2018 (the original tool's ``VGG9``): ``vgg(variant="vgg9")``.

    2,789,706 parameters on CIFAR-10 (3x32x32, 10 classes).
    """
    return vgg(variant="vgg9", num_classes=num_classes, in_channels=in_channels, image_size=image_size)
