"""One :class:`TaskSpec` per task: the keys its ``conf/task/<name>.yaml`` section may hold and the
traits the rest of the code asks about (does it take directions, can its workers shard a surface,
does it join two models). A trait is decided here once instead of in a tuple of task names in
every module that needs it."""

from __future__ import annotations

from dataclasses import dataclass

from landscape_exp.errors import choice_error


@dataclass(frozen=True)
class TaskSpec:
    """``keys``: what the task's config section may hold besides ``name`` (anything else came from
    a ``+task.key=...`` nothing reads, and is refused). ``ndim``: the dimension of the surface it
    writes (0: none). ``directions``: it moves the model along directions (``direction.*`` apply).
    ``sharded``: the workers of one job (submitit ``tasks_per_node``) can split its surface.
    ``between_models``: it joins two or three models (a path, not a model's own neighbourhood).
    ``sharpness``: it adds the sharpness and flatness measures of the checkpoint it analyses."""

    name: str
    keys: tuple[str, ...] = ()
    ndim: int = 0
    directions: bool = False
    sharded: bool = False
    between_models: bool = False
    sharpness: bool = False


_SURFACE_KEYS = ("x", "direction_type", "ignore")
TASK_SPECS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("train"),
    TaskSpec("surface1d", _SURFACE_KEYS, 1, directions=True, sharded=True, sharpness=True),
    TaskSpec("surface2d", (*_SURFACE_KEYS, "y"), 2, directions=True, sharded=True, sharpness=True),
    TaskSpec("interp1d", _SURFACE_KEYS, 1, directions=True, sharded=True, between_models=True, sharpness=True),
    TaskSpec("plane", (*_SURFACE_KEYS, "y"), 2, directions=True, sharded=True, between_models=True, sharpness=True),
    TaskSpec("plot"),
    TaskSpec("merge"),
    TaskSpec("hessian", _SURFACE_KEYS),
    TaskSpec("hessian_surface", (*_SURFACE_KEYS, "y"), 2, directions=True),
    TaskSpec("hessian_trajectory", ("ignore",)),
    TaskSpec("trajectory", ("direction_type", "ignore", "num", "margin", "start_epoch", "stride", "surface_figures"),
             2, directions=True),
    TaskSpec("connect", between_models=True),
    TaskSpec("connect_eval", between_models=True),
    TaskSpec("compare", ("sweep_dir", "runs", "metric", "ignore", "replicates")),
)}
SHARDED_TASKS = tuple(n for n, t in TASK_SPECS.items() if t.sharded)


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``; an unknown name is a one-line error listing the tasks."""
    if name not in TASK_SPECS:
        raise choice_error("task", name, list(TASK_SPECS))
    return TASK_SPECS[name]
