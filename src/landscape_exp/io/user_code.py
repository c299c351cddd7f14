"""The researcher's own code, named by a ``_target_`` they typed (command line or their own config):
their ``nn.Module`` classes and dataset factories. Trusted because they typed it; a ``_target_``
read from a file (a checkpoint's model config) alone never reaches this module, see
:func:`landscape_exp.models.build_model`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from landscape_exp.errors import UserError


def import_callable(path: str, what: str = "_target_") -> Callable[..., Any]:
    """``pkg.module.name`` (or ``pkg.module:name``) as a callable; a one-line error when it is not there."""
    module, sep, name = path.replace(":", ".").rpartition(".")
    if not sep or not module:
        raise UserError(f"{what}={path!r} must be a dotted path such as mypkg.models.MyNet")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{what}={path!r} cannot be imported ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                        "is its package on PYTHONPATH?") from None
    if not callable(obj):
        raise UserError(f"{what}={path!r} is not callable")
    return obj
