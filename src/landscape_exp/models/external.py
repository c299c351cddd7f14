"""Models from outside the zoo: torchvision's architectures by name (the researcher's own
``nn.Module`` comes through :mod:`landscape_exp.user_code`)."""

from __future__ import annotations

from torch import nn

from landscape_exp.errors import UserError, choice_error


def torchvision_model(arch: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """``torchvision.models.get_model(arch, num_classes=...)``, randomly initialised (pretrained
    weights need a download). Inputs of another channel count get a 1x1 convolution in front."""
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
