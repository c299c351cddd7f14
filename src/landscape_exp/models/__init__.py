"""The model zoo: ``build_model("resnet56", num_classes=10, in_channels=3, image_size=32)`` by
variant name (:func:`list_models`), or ``build_model(cfg)`` from a resolved config mapping with a
``_target_`` and a ``name`` (what ``conf/model/*.yaml`` and checkpoints hold).

Only the builders listed in :data:`BUILDERS` can be instantiated: a checkpoint carries its model
config, and an arbitrary ``_target_`` there would let a file run any callable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.models.registry import BUILDER_FUNCTIONS, ModelSpec, list_models, model_spec, register_model

BUILDERS = tuple(BUILDER_FUNCTIONS)

__all__ = ["BUILDERS", "ModelSpec", "build_model", "list_models", "model_spec", "register_model"]


def build_model(model: str | Mapping[str, Any], **kwargs: Any) -> nn.Module:
    """Instantiate a model by registered variant name, or from its (resolved) config mapping.

    ``kwargs`` are builder arguments over the variant's own (or the mapping's), as a Hydra
    override ``model.<key>=...`` would be. A mapping without ``_target_`` but with a registered
    ``name`` is that variant.
    """
    if isinstance(model, str):
        spec = model_spec(model)
        return _call(spec.name, spec.builder, {**spec.fixed, **kwargs})
    options = {str(k): v for k, v in {**dict(model), **kwargs}.items()}
    target = options.pop("_target_", None)
    name = options.pop("name", target)
    if target is None and isinstance(name, str):
        spec = model_spec(name)
        return _call(spec.name, spec.builder, {**spec.fixed, **options})
    if target not in BUILDER_FUNCTIONS:
        raise UserError(f"model {name!r} has builder {target!r}, which is not one of: {', '.join(BUILDERS)}")
    return _call(name, str(target), options)


def _call(name: Any, target: str, options: Mapping[str, Any]) -> nn.Module:
    # OmegaConf ListConfig and friends -> plain Python values.
    options = {k: (list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig" else v)
               for k, v in options.items()}
    try:
        return BUILDER_FUNCTIONS[target](**options)
    except TypeError as e:
        raise UserError(f"model {name!r}: bad options {sorted(options)} ({e})") from None
