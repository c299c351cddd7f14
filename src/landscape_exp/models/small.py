"""Small models (LeNet-5 style CNN, MLP) and the helpers every builder of the zoo shares.

Every builder takes keyword arguments ``num_classes``, ``in_channels`` and ``image_size`` (plus
its own options) and returns an ``nn.Module`` mapping ``(B, in_channels, image_size, image_size)``
float images to ``(B, num_classes)`` logits.

The shared helpers live here because this module depends on no other zoo module (only on the
registry, for the decorator that registers ``lenet`` and ``mlp``):
``check_io`` validates the three common arguments and ``init_like_original`` reproduces the weight
initialisation of the original tool (tomgoldstein/loss-landscape ``cifar10/main.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.models.registry import DIGITS, register_builder, variant


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise ``UserError``."""
    # bool is an int subclass; ``True`` as a channel count is always a config mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"model {name} must be a positive integer, got {value!r}")
    return value


def check_io(
    model: str, num_classes: object, in_channels: object, image_size: object, min_image_size: int = 1
) -> tuple[int, int, int]:
    """Validate the arguments every builder shares; return them as ints.

    ``min_image_size`` is the smallest input side the architecture can process (its
    down-sampling stages must not shrink the map to nothing).
    """
    nc = positive_int("num_classes", num_classes)
    ic = positive_int("in_channels", in_channels)
    size = positive_int("image_size", image_size)
    if size < min_image_size:
        raise UserError(f"model {model} needs image_size >= {min_image_size}, got {size}")
    return nc, ic, size


@torch.no_grad()
def init_like_original(model: nn.Module) -> nn.Module:
    """Initialise ``model`` in place the way the original tool's ``init_params`` does.

    Conv: Kaiming normal (fan_in, ReLU gain), bias 0. BatchNorm2d: weight 1, bias 0.
    Linear: N(0, 1e-3^2), bias 0. Other modules keep PyTorch's defaults (BatchNorm1d already
    starts at weight 1, bias 0). Draws come from the global torch RNG in module order, so the
    result is deterministic under ``torch.manual_seed``. Returns ``model`` for chaining.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1e-3)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def lenet_feature_size(image_size: int) -> int:
    """Side of LeNet's last feature map: the 5x5 convs keep the size (padding 2), each 2x2
    max-pool halves it, rounding down."""
    return image_size // 2 // 2


class LeNet(nn.Module):
    """LeNet-5 style CNN: conv5x5(6) -> ReLU -> pool2 -> conv5x5(16) -> ReLU -> pool2 ->
    fc120 -> ReLU -> fc84 -> ReLU -> fc(num_classes). Convs are padded by 2 so an 8x8 digit
    still has a 2x2 map after both pools; the flatten size follows from ``image_size``."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        side = lenet_feature_size(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        return self.classifier(torch.flatten(self.features(x), 1))


@register_builder(variant("lenet"), data=DIGITS)
def lenet(*, num_classes: int, in_channels: int, image_size: int) -> LeNet:
    """Build a LeNet-5 style CNN (PyTorch default initialisation).

    Needs ``image_size >= 4`` (two 2x2 pools). Works on 8x8 digits, 28x28 MNIST, 32x32 CIFAR.
    """
    nc, ic, size = check_io("lenet", num_classes, in_channels, image_size, min_image_size=4)
    return LeNet(nc, ic, size)


class MLP(nn.Module):
    """Flatten -> (Linear -> ReLU) for each hidden width -> Linear(num_classes)."""

    def __init__(self, num_classes: int, in_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        return self.net(torch.flatten(x, 1))


@register_builder(variant("mlp", hidden=(64, 64)), data=DIGITS)
def mlp(
    *, hidden: Sequence[int] = (64, 64), num_classes: int, in_channels: int, image_size: int
) -> MLP:
    """Build a fully connected ReLU network on flattened images (PyTorch default init).

    ``hidden`` lists the hidden-layer widths (may be empty: then it is a linear classifier).
    A YAML list arrives as an OmegaConf ``ListConfig``; any sequence of positive ints works.
    """
    nc, ic, size = check_io("mlp", num_classes, in_channels, image_size)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise UserError(f"model mlp hidden must be a list of positive integers, got {hidden!r}")
    widths = [positive_int("hidden width", h) for h in hidden]
    return MLP(nc, ic * size * size, widths)
