"""Models from outside the zoo: torchvision's architectures by name (the researcher's own
``nn.Module`` comes through :mod:`landscape_exp.io.user_code`)."""

from __future__ import annotations

from torch import nn

from landscape_exp.errors import UserError, choice_error
from landscape_exp.models.registry import CIFAR10, register_builder, variant


@register_builder(variant("torchvision", arch="resnet18"), data=CIFAR10)
def torchvision_model(arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """``torchvision.models.get_model(arch, num_classes=...)``, randomly initialised (pretrained
    weights need a download). Inputs of another channel count get a 1x1 convolution in front.

    ``image_size`` is accepted like every builder's and unused (torchvision's nets pool
    adaptively). Built by name, the dataset arguments default to CIFAR-10's (the registry's)."""
    import torchvision.models as tvm

    if arch not in tvm.list_models():
        raise choice_error("torchvision model arch", arch, tvm.list_models())
    try:
        model = tvm.get_model(arch, weights=None, num_classes=int(num_classes))
    except (TypeError, ValueError) as e:
        raise UserError(f"torchvision model {arch!r}: {' '.join(str(e).split())[:160]}") from None
    if int(in_channels) != 3:
        model = nn.Sequential(nn.Conv2d(int(in_channels), 3, kernel_size=1), model)
    return model
