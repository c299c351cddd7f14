"""Task registry: one thin function per task, ``run(ctx) -> summary dict``, imported lazily.

Tasks call the library and never each other."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from landscape_exp.errors import choice_error

# task name -> "module:function" under landscape_exp.tasks
TASKS: dict[str, str] = {
    "train": "train:run",
    "surface1d": "surfaces:run",
    "surface2d": "surfaces:run",
    "interp1d": "surfaces:run",
    "plane": "surfaces:run",
    "plot": "plot:run",
    "merge": "merge:run",
    "hessian": "hessian:run",
    "hessian_surface": "hessian_surface:run",
    "hessian_trajectory": "hessian_trajectory:run",
    "trajectory": "trajectory:run",
    "connect": "connect:run",
    "connect_eval": "connect:run_eval",
    "compare": "compare:run",
}


def get_task(name: str) -> Callable[[Any], dict[str, Any]]:
    if name not in TASKS:
        raise choice_error("task", name, list(TASKS))
    module, func = TASKS[name].split(":")
    return getattr(importlib.import_module(f"landscape_exp.tasks.{module}"), func)
