"""The directions that span a surface, built from a dimension and a source, never from a task:

* ``file``: read from a direction file in the original tool's layout (``direction.file``);
* ``random``: seeded Gaussian directions, normalized (filter/layer/weight/none), Li et al. 2018;
* ``checkpoints``: differences to other minimizers, ``theta2 - theta1`` (and ``theta3 - theta1``),
  the 1D interpolation of Goodfellow et al. and the plane through three models.

A built set is saved as ``directions.h5`` only once the surface file has accepted the run
(:meth:`Plane.save`), so a refused rerun leaves the old file untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_exp.config.choices import DIRECTION_SOURCES
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import load_checkpoint
from landscape_exp.job.checkpoints import check_same_architecture, ensure_checkpoint
from landscape_exp.job.context import RunContext
from landscape_exp.models.loading import model_from_checkpoint
from landscape_exp.weights import directions as D
from landscape_exp.weights.params import Direction, named_tensors, snapshot

GROUPS = ("xdirection", "ydirection")


@dataclass
class Plane:
    """One or two directions, where they came from (``info``, stored with the surface) and the
    file they are (or will be) in."""

    directions: list[Direction]
    info: dict[str, Any]
    dir_file: Path
    names: list[str] = field(default_factory=list)  # tensor names, for a file still to write
    pending: bool = False

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [t for d in self.directions for t in d]

    def norms(self) -> list[float]:
        return [D.norm(d) for d in self.directions]

    def cosine(self) -> float | None:
        return D.cosine_similarity(*self.directions) if len(self.directions) == 2 else None

    def save(self) -> None:
        """Write the direction file if this plane built it and it is not written yet."""
        if not self.pending:
            return
        attrs = {k: str(v) for k, v in self.info.items() if k != "dir_file"}
        D.save_directions(self.dir_file, dict(zip(GROUPS, self.directions)), names=self.names, attrs=attrs)
        self.pending = False


def build_plane(ctx: RunContext, model: nn.Module, model_cfg: dict[str, Any], ndim: int, source: str) -> Plane:
    """``ndim`` (1 or 2) directions at ``model``'s weights from ``source`` (see the module)."""
    if ndim not in (1, 2):
        raise ValueError(f"a surface has 1 or 2 directions, not {ndim}")
    ds = ctx.settings.direction
    kind, ignore = ds.type, ds.ignore
    origin = snapshot(model, kind)
    groups = GROUPS[:ndim]
    info: dict[str, Any] = {"type": kind, "ignore": ignore or "none"}
    if source == "file":
        assert ds.file is not None
        dirs = D.load_directions(ds.file, origin, groups)
        if any(g not in dirs for g in groups):
            raise UserError(f"direction file {ds.file!r} lacks {' and '.join(groups)} needed by a {ndim}D surface")
        info.update(source="file", dir_file=str(Path(ds.file).resolve()))
        return Plane([dirs[g] for g in groups], info, Path(info["dir_file"]))
    if source == "checkpoints":
        dirs, paths = [], {}
        for i, which in enumerate(("model2", "model3")[:ndim]):
            tensors, paths[which] = _other_model(ctx, which, i + 1, model_cfg, kind)
            dirs.append(D.difference_direction(tensors, origin, ignore))
        info.update(source="checkpoints", **paths)
    elif source == "random":
        norm = ds.normalization
        dirs = [D.create_random_direction(origin, seed=ds.xseed, norm=norm, ignore=ignore)]
        info.update(source="random", normalization=norm, xseed=ds.xseed)
        if ndim == 2:
            if not ds.same_dir and ds.yseed == ds.xseed:
                raise UserError(f"direction.xseed and direction.yseed are both {ds.xseed}; use direction.same_dir=true "
                                "for one direction on both axes")
            dirs.append([t.clone() for t in dirs[0]] if ds.same_dir else
                        D.create_random_direction(origin, seed=ds.yseed, norm=norm, ignore=ignore))
            info.update(yseed=ds.yseed, same_dir=ds.same_dir)
    else:
        raise ValueError(f"unknown direction source {source!r}; allowed: {', '.join(DIRECTION_SOURCES)}")
    dir_file = ctx.out_dir / "directions.h5"
    info["dir_file"] = str(dir_file.resolve())
    return Plane(dirs, info, dir_file, names=[n for n, _ in named_tensors(model, kind)], pending=True)


def _other_model(ctx: RunContext, which: str, seed_offset: int, ref_cfg: dict[str, Any],
                 kind: str) -> tuple[list[torch.Tensor], str]:
    """Tensors of direction.model2 / model3 (trained with seed+offset if not given)."""
    given = getattr(ctx.settings.direction, which)
    path = ensure_checkpoint(ctx, seed_offset=seed_offset, explicit=given)
    ckpt = load_checkpoint(path)
    cfg2 = ckpt.get("model_cfg")
    check_same_architecture(f"direction.{which}", path, cfg2, ref_cfg, "the checkpoint")
    model2 = model_from_checkpoint(ckpt, f"direction.{which} {str(path)!r}", None if cfg2 is not None else ref_cfg)
    return snapshot(model2.to(ctx.device), kind), str(path)
