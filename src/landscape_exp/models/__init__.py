"""The model zoo: ``build_model("resnet56", num_classes=10)`` by variant name (:func:`list_models`),
or ``build_model(cfg)`` from a resolved config mapping with a ``_target_`` and a ``name`` (what
``conf/model/*.yaml`` and checkpoints hold).

Each builder registers itself and its variants with ``@register_builder`` beside its definition
(:mod:`landscape_exp.models.registry`); importing the zoo modules here is what fills the registry,
so they are imported before anything is built.

Only the builders listed in :data:`BUILDERS` can be instantiated from a config alone: a checkpoint
carries its model config, and an arbitrary ``_target_`` there would let a file run any callable.
The researcher's own model (``model._target_=mypkg.nets.MyNet`` on the command line or in their
config) is passed as ``trusted``: only a target the user named is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.io.user_code import import_callable

# The zoo modules register their builders on import (BUILDERS follows this order, except that the
# small module comes first: the others import it for its shared helpers).
from landscape_exp.models import densenet, external, resnet, small, vgg  # noqa: F401
from landscape_exp.models.registry import BUILDER_FUNCTIONS, ModelSpec, list_models, model_spec

#: The allowed ``_target_`` paths of the zoo's builders, in registration order.
BUILDERS = tuple(BUILDER_FUNCTIONS)

__all__ = ["BUILDERS", "ModelSpec", "build_model", "list_models", "model_spec"]


def build_model(model: str | Mapping[str, Any], *, trusted: Collection[str] = (), **kwargs: Any) -> nn.Module:
    """Instantiate a model by registered variant name, or from its (resolved) config mapping.

    ``kwargs`` are builder arguments over the variant's own (or the mapping's), as a Hydra
    override ``model.<key>=...`` would be. A mapping without ``_target_`` but with a registered
    ``name`` is that variant. ``trusted``: ``_target_`` paths outside the zoo that the user named
    themselves (their own model classes), imported and called with the mapping's other keys.

    Built by name, ``num_classes``, ``in_channels`` and ``image_size`` default to the dataset the
    variant is made for (``model_spec(name).data``), so ``build_model("resnet56", num_classes=10)``
    is the CIFAR-10 network: CIFAR-10 (10 classes, 3x32x32) for ``resnet*``, ``wrn*``, ``vgg9``,
    ``densenet121`` and ``torchvision``; scikit-learn digits (10 classes, 1x8x8, the embedded
    default dataset) for ``lenet`` and ``mlp``. Pass them for any other dataset. A mapping with a
    ``_target_`` (a YAML config, a checkpoint's) gets no defaults: it carries all three.
    """
    if isinstance(model, str):
        spec = model_spec(model)
        return _call(spec.name, BUILDER_FUNCTIONS[spec.builder], {**spec.defaults, **spec.fixed, **kwargs})
    options = {str(k): v for k, v in {**dict(model), **kwargs}.items()}
    target = options.pop("_target_", None)
    name = options.pop("name", target)
    if target is None and isinstance(name, str):
        spec = model_spec(name)
        return _call(spec.name, BUILDER_FUNCTIONS[spec.builder], {**spec.defaults, **spec.fixed, **options})
    if target in BUILDER_FUNCTIONS:
        return _call(name, BUILDER_FUNCTIONS[str(target)], options)
    if target is not None and str(target) in trusted:
        return _call(name, import_callable(str(target), "model._target_"), options)
    raise UserError(f"model {name!r} has builder {target!r}, which is not one of: {', '.join(BUILDERS)} "
                    "(a model of your own is built only when you name its _target_ yourself: model._target_=...)")


def _call(name: Any, builder: Callable[..., Any], options: Mapping[str, Any]) -> nn.Module:
    # OmegaConf ListConfig and friends -> plain Python values.
    options = {k: (list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig" else v)
               for k, v in options.items()}
    try:
        model = builder(**options)
    except TypeError as e:
        raise UserError(f"model {name!r}: bad options {sorted(options)} ({e})") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model {name!r}: its builder returned a {type(model).__name__}, not a torch.nn.Module")
    return model
