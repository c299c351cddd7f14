"""The registry of model variants: each name of ``conf/model/<name>.yaml`` with its builder, the
arguments that make the variant, and the shape of the dataset it is made for (timm's
``register_model`` / ``create_model`` idea).

A builder registers itself, and its variants, with a decorator beside its definition::

    @register_builder(variant("resnet20", depth=20, width=1, shortcut=True), ..., data=CIFAR10)
    def cifar_resnet(*, depth, width, shortcut, num_classes, in_channels, image_size): ...

so a variant is written once, next to the code it configures, and the builder's key is its own
dotted path ``f"{fn.__module__}.{fn.__name__}"``: the very ``_target_`` the YAML files (and so
checkpoints and stored fingerprints) write. The registry doubles as the allow-list of builders: a
model config (from the command line or stored in a checkpoint) can only reach the functions in
:data:`BUILDER_FUNCTIONS`, never arbitrary code.

This module imports none of the zoo modules (they import it, for the decorator);
``landscape_exp.models`` imports them all so that they have registered before anything is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from torch import nn

from landscape_exp.errors import choice_error

#: The arguments every builder takes from the dataset (filled by ``conf/model/*.yaml``'s
#: interpolations); a variant never fixes them.
DATASET_ARGS = ("num_classes", "in_channels", "image_size")


@dataclass(frozen=True)
class DatasetShape:
    """What a builder needs to know of a dataset: its class count, channels and (square) side.

    Values equal the ``num_classes``, ``channels`` and ``image_size`` of ``conf/dataset/<name>.yaml``
    (``tests/test_models.py`` checks it)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int

    def as_kwargs(self) -> dict[str, int]:
        """The three builder arguments of :data:`DATASET_ARGS`."""
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size}


#: The CIFAR networks (ResNets, WRNs, VGG-9, DenseNet-121) are made for CIFAR-10, as in the
#: original tool, which fixes its 10 classes and 3x32x32 inputs.
CIFAR10 = DatasetShape("cifar10", num_classes=10, in_channels=3, image_size=32)
#: The small networks are made for the project's embedded default dataset: scikit-learn's 8x8
#: grey handwritten digits, 10 classes (no download).
DIGITS = DatasetShape("digits", num_classes=10, in_channels=1, image_size=8)


@dataclass(frozen=True)
class Variant:
    """A variant's name and the builder arguments that make it (see :func:`variant`)."""

    name: str
    fixed: Mapping[str, Any]


def variant(name: str, /, **fixed: Any) -> Variant:
    """Declare the variant ``name`` = its builder called with ``fixed`` (for :func:`register_builder`)."""
    return Variant(name, MappingProxyType(dict(fixed)))


@dataclass(frozen=True)
class ModelSpec:
    """A registered variant: ``builder`` (a key of :data:`BUILDER_FUNCTIONS`, the YAML's
    ``_target_``) called with ``fixed`` plus ``num_classes``, ``in_channels`` and ``image_size``,
    which default to those of ``data``, the dataset the variant is made for."""

    name: str
    builder: str
    fixed: Mapping[str, Any]
    data: DatasetShape

    @property
    def defaults(self) -> dict[str, int]:
        """The dataset arguments a build by name uses when the caller gives none."""
        return self.data.as_kwargs()


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_MODELS: dict[str, ModelSpec] = {}

#: Allowed builders by dotted path (the ``_target_`` of ``conf/model/*.yaml``), in registration
#: order; a read-only view of the registry, filled by :func:`register_builder`.
BUILDER_FUNCTIONS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(_BUILDERS)

BuilderT = TypeVar("BuilderT", bound=Callable[..., nn.Module])


def register_builder(*variants: Variant, data: DatasetShape) -> Callable[[BuilderT], BuilderT]:
    """Decorator: allow the decorated builder (keyed by its dotted path) and register ``variants``
    of it, whose dataset arguments default to ``data``'s shape when built by name.

    Everything is checked before anything is recorded, so a failed registration leaves the registry
    as it was. A ``ValueError`` (a programming error, raised at import) when: the builder or a
    variant name is registered twice; the builder is not a module-level function (a ``_target_``
    must import to it); a variant fixes a dataset argument or passes arguments the builder does not
    take.
    """

    def decorate(fn: BuilderT) -> BuilderT:
        path = f"{fn.__module__}.{fn.__name__}"
        if fn.__qualname__ != fn.__name__:
            raise ValueError(f"builder {path!r}: only a module-level function can be a _target_ "
                             f"(got {fn.__qualname__!r})")
        if path in _BUILDERS:
            raise ValueError(f"builder {path!r} is registered twice")
        names = [v.name for v in variants]
        for v in variants:
            if v.name in _MODELS or names.count(v.name) > 1:
                raise ValueError(f"model {v.name!r} is registered twice")
            clash = sorted(set(v.fixed) & set(DATASET_ARGS))
            if clash:
                raise ValueError(f"model {v.name!r}: {clash} come from the dataset, not the variant")
            try:
                inspect.signature(fn).bind(**v.fixed, **data.as_kwargs())
            except TypeError as e:
                raise ValueError(f"model {v.name!r}: {path} does not take {dict(v.fixed)} ({e})") from None
        _BUILDERS[path] = fn
        for v in variants:
            _MODELS[v.name] = ModelSpec(v.name, path, v.fixed, data)
        return fn

    return decorate


def list_models() -> list[str]:
    """The registered variant names, sorted (the files of ``conf/model/``)."""
    return sorted(_MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registered variant ``name``, or a one-line UserError listing the allowed names."""
    spec = _MODELS.get(name)
    if spec is None:
        raise choice_error("model", name, list(_MODELS))
    return spec
