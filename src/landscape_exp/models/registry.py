"""The registry of model variants: each name of ``conf/model/<name>.yaml`` with its builder and the
arguments that make the variant (timm's ``create_model`` idea).

It doubles as the allow-list of builders: a model config (from the command line or stored in a
checkpoint) can only reach the functions in :data:`BUILDER_FUNCTIONS`, never arbitrary code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from landscape_exp.errors import choice_error
from landscape_exp.models.densenet import densenet121
from landscape_exp.models.external import torchvision_model
from landscape_exp.models.resnet import cifar_resnet
from landscape_exp.models.small import lenet, mlp
from landscape_exp.models.vgg import vgg9

# Keyed by the ``_target_`` the YAML files write; the order is that of the error messages.
BUILDER_FUNCTIONS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType({
    "landscape_exp.models.vgg.vgg9": vgg9,
    "landscape_exp.models.resnet.cifar_resnet": cifar_resnet,
    "landscape_exp.models.densenet.densenet121": densenet121,
    "landscape_exp.models.small.lenet": lenet,
    "landscape_exp.models.small.mlp": mlp,
    "landscape_exp.models.external.torchvision_model": torchvision_model,
})


@dataclass(frozen=True)
class ModelSpec:
    """A variant: ``builder`` (a key of :data:`BUILDER_FUNCTIONS`) called with ``fixed`` plus the
    dataset's ``num_classes``, ``in_channels`` and ``image_size``."""

    name: str
    builder: str
    fixed: Mapping[str, Any]


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: str, **fixed: Any) -> ModelSpec:
    """Register the variant ``name``; a second registration of a name is a programming error."""
    if builder not in BUILDER_FUNCTIONS:
        raise ValueError(f"model {name!r}: builder {builder!r} is not one of {', '.join(BUILDER_FUNCTIONS)}")
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    spec = ModelSpec(name, builder, MappingProxyType(dict(fixed)))
    _MODELS[name] = spec
    return spec


def list_models() -> list[str]:
    """The registered variant names, sorted (the files of ``conf/model/``)."""
    return sorted(_MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registered variant ``name``, or a one-line UserError listing the allowed names."""
    spec = _MODELS.get(name)
    if spec is None:
        raise choice_error("model", name, list(_MODELS))
    return spec


_RESNET = "landscape_exp.models.resnet.cifar_resnet"

register_model("vgg9", "landscape_exp.models.vgg.vgg9")
register_model("densenet121", "landscape_exp.models.densenet.densenet121")
register_model("lenet", "landscape_exp.models.small.lenet")
register_model("mlp", "landscape_exp.models.small.mlp", hidden=(64, 64))
register_model("torchvision", "landscape_exp.models.external.torchvision_model", arch="resnet18")
for _depth in (20, 56, 110):
    register_model(f"resnet{_depth}", _RESNET, depth=_depth, width=1, shortcut=True)
    register_model(f"resnet{_depth}_noshort", _RESNET, depth=_depth, width=1, shortcut=False)
for _width in (2, 4, 8):
    register_model(f"wrn56_{_width}", _RESNET, depth=56, width=_width, shortcut=True)
    register_model(f"wrn56_{_width}_noshort", _RESNET, depth=56, width=_width, shortcut=False)
