"""The model zoo. Models are built from a config mapping with a ``_target_`` and a ``name``.

Only the builders listed in :data:`BUILDERS` can be instantiated: a checkpoint carries its model
config, and an arbitrary ``_target_`` there would let a file run any callable.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from torch import nn

from landscape_exp.errors import UserError

BUILDERS = (
    "landscape_exp.models.vgg.vgg9",
    "landscape_exp.models.resnet.cifar_resnet",
    "landscape_exp.models.densenet.densenet121",
    "landscape_exp.models.small.lenet",
    "landscape_exp.models.small.mlp",
)


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate a model from its (resolved) config mapping."""
    kwargs = {str(k): v for k, v in dict(cfg).items()}
    target = kwargs.pop("_target_", None)
    name = kwargs.pop("name", target)
    if target not in BUILDERS:
        raise UserError(f"model {name!r} has builder {target!r}, which is not one of: {', '.join(BUILDERS)}")
    module, func = str(target).rsplit(".", 1)
    builder = getattr(importlib.import_module(module), func)
    # OmegaConf ListConfig and friends -> plain Python values.
    kwargs = {k: (list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig" else v)
              for k, v in kwargs.items()}
    try:
        return builder(**kwargs)
    except TypeError as e:
        raise UserError(f"model {name!r}: bad options {sorted(kwargs)} ({e})") from None
