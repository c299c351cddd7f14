"""task=surface1d | surface2d | interp1d | plane: compute a loss surface, write it, draw it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from landscape_exp import directions as D
from landscape_exp.checkpoint import load_checkpoint, model_from_checkpoint
from landscape_exp.errors import UserError
from landscape_exp.figures import render_surface
from landscape_exp.grid import Grid, parse_grid
from landscape_exp.resources import check_surface_resources
from landscape_exp.sharding import check_shard, merge_shards, shard_indices, shard_path, worker_shard
from landscape_exp.sharpness import sharpness_summary, store_sharpness
from landscape_exp.surface import compute_surface
from landscape_exp.surface_file import SurfaceFile, finite_summary, metric_names, read_surface
from landscape_exp.tasks.common import (
    RunContext,
    dataset_for,
    dataset_identity,
    ensure_checkpoint,
    eval_batch_size,
    eval_splits,
    file_sha256,
    load_for_analysis,
    precision_for,
    tensors_sha256,
    versions,
)
from landscape_exp.weight_space import WeightSpace

TWO_D = ("surface2d", "plane")


def direction_settings(ctx: RunContext) -> tuple[str, str | None]:
    """(type, ignore): the direction group's values, or the task's defaults where those are null."""
    dcfg, tcfg = ctx.cfg.direction, ctx.cfg.task
    kind = str(dcfg.get("type") or tcfg.get("direction_type") or "weights")
    if kind not in D.DIRECTION_TYPES:
        raise UserError(f"unknown direction type {kind!r}; allowed: {', '.join(D.DIRECTION_TYPES)}")
    ignore = dcfg.get("ignore") if dcfg.get("ignore") is not None else tcfg.get("ignore", "biasbn")
    ignore = None if ignore in (None, "none", "") else str(ignore)
    if ignore not in (None, "biasbn"):
        raise UserError(f"unknown direction.ignore {ignore!r}; allowed: biasbn, none")
    return kind, ignore


def grid_for(ctx: RunContext) -> Grid:
    task = ctx.cfg.task
    x = ctx.cfg.get("x") or task.get("x")
    if task.name in TWO_D:
        return parse_grid(x, ctx.cfg.get("y") or task.get("y"))
    if ctx.cfg.get("y"):
        raise UserError(f"task {task.name!r} is one-dimensional; drop y={ctx.cfg.y}")
    return parse_grid(x)


def other_model(ctx: RunContext, which: str, seed_offset: int, ref_cfg: dict, kind: str) -> tuple[list[torch.Tensor], str]:
    """Tensors of direction.model2 / model3 (trained with seed+offset if not given)."""
    given = ctx.cfg.direction.get(which)
    path = ensure_checkpoint(ctx, seed_offset=seed_offset, explicit=str(given) if given else None)
    ckpt = load_checkpoint(path)
    cfg2 = ckpt.get("model_cfg")
    if cfg2 is not None and ref_cfg is not None and dict(cfg2) != dict(ref_cfg):
        raise UserError(
            f"direction.{which} {str(path)!r} is a {cfg2.get('name', '?')!r} model {_cfg_note(cfg2, ref_cfg)}, "
            f"but the checkpoint is {ref_cfg.get('name', '?')!r}; both must have the same architecture"
        )
    model2 = model_from_checkpoint(ckpt, f"direction.{which} {str(path)!r}", None if cfg2 is not None else ref_cfg)
    return D.snapshot(model2.to(ctx.device), kind), str(path)


def _cfg_note(a: dict, b: dict) -> str:
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return f"(differs in {', '.join(diff)})" if diff else ""


def make_directions(
    ctx: RunContext, model: torch.nn.Module, ckpt: dict, kind: str, ignore: str | None, *, save: bool = True
) -> tuple[dict[str, list[torch.Tensor]], dict[str, Any]]:
    """Directions for this task: from ``direction.file``, or built and saved to the run dir.

    With ``save=False`` a built direction file is not written yet (``info["pending_save"]``):
    the caller writes it with :func:`save_pending_directions` once the surface file has accepted
    the run, so a refused rerun leaves the old directions.h5 untouched."""
    task = ctx.cfg.task.name
    dcfg = ctx.cfg.direction
    if OmegaConf.is_missing(dcfg, "file"):  # direction=hessian: the file is required
        raise UserError(f"direction={dcfg.get('name')} needs direction.file=<path> "
                        "(task=hessian writes <run dir>/hessian_directions.h5)")
    origin = D.snapshot(model, kind)
    names = [n for n, _ in D.named_tensors(model, kind)]
    groups = ("xdirection", "ydirection") if task in TWO_D else ("xdirection",)
    info: dict[str, Any] = {"type": kind, "ignore": ignore or "none"}
    if dcfg.get("file"):
        dirs = D.load_directions(str(dcfg.file), origin, groups)
        if "xdirection" not in dirs or (task in TWO_D and "ydirection" not in dirs):
            raise UserError(f"direction file {str(dcfg.file)!r} lacks {' and '.join(groups)} needed by task {task!r}")
        info.update(source="file", dir_file=str(Path(str(dcfg.file)).resolve()))
        return dirs, info
    if task in ("interp1d", "plane"):
        ref_cfg = ckpt.get("model_cfg") or ctx.container(ctx.cfg.model)
        t2, p2 = other_model(ctx, "model2", 1, ref_cfg, kind)
        dirs = {"xdirection": D.difference_direction(t2, origin, ignore)}
        info.update(source="checkpoints", model2=p2)
        if task == "plane":
            t3, p3 = other_model(ctx, "model3", 2, ref_cfg, kind)
            dirs["ydirection"] = D.difference_direction(t3, origin, ignore)
            info["model3"] = p3
    else:
        norm = str(ctx.cfg.normalization.name)
        xseed, yseed = int(dcfg.xseed), int(dcfg.yseed)
        dirs = {"xdirection": D.create_random_direction(origin, seed=xseed, norm=norm, ignore=ignore)}
        info.update(source="random", normalization=norm, xseed=xseed)
        if task in TWO_D:
            same = bool(dcfg.get("same_dir", False))
            if not same and yseed == xseed:
                raise UserError(f"direction.xseed and direction.yseed are both {xseed}; use direction.same_dir=true for one direction on both axes")
            dirs["ydirection"] = [t.clone() for t in dirs["xdirection"]] if same else \
                D.create_random_direction(origin, seed=yseed, norm=norm, ignore=ignore)
            info.update(yseed=yseed, same_dir=same)
    dir_file = ctx.out_dir / "directions.h5"
    info["dir_file"] = str(dir_file.resolve())
    if save:
        save_pending_directions(dirs, {**info, "pending_save": names})
    else:
        info["pending_save"] = names
    return dirs, info


def save_pending_directions(dirs: dict[str, list[torch.Tensor]], info: dict[str, Any]) -> None:
    """Write a direction file that :func:`make_directions` built but did not save yet."""
    names = info.pop("pending_save", None)
    if names is None:
        return
    attrs = {k: str(v) for k, v in info.items() if k != "dir_file"}
    D.save_directions(info["dir_file"], dirs, names=names, attrs=attrs)


def shard_settings(ctx: RunContext) -> tuple[int, int]:
    shard = ctx.cfg.get("shard") or {}
    count, index = int(shard.get("count", 1)), int(shard.get("index", 0))
    check_shard(count, index)
    worker = ctx.job.get("worker")
    if worker:  # the workers of one job (submitit tasks_per_node) split its shard again
        return worker_shard(count, index, int(worker["count"]), int(worker["rank"]))
    return count, index


def surface_path(ctx: RunContext, shard_count: int) -> Path:
    """``surf_file``, else the sweep directory's ``surface.h5`` for a multirun over
    ``shard.index`` (all shards meet there), else the job directory's ``surface.h5`` (shared by
    the workers of one job), else ``<run dir>/surface.h5``."""
    if ctx.cfg.get("surf_file"):
        return Path(str(ctx.cfg.surf_file))
    if int((ctx.cfg.get("shard") or {}).get("count", 1)) > 1 and ctx.job.get("sweep_dir"):
        return Path(str(ctx.job["sweep_dir"])) / "surface.h5"
    if shard_count > 1 and ctx.job.get("job_dir"):
        return Path(str(ctx.job["job_dir"])) / "surface.h5"
    return ctx.out_dir / "surface.h5"


def run(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    task = str(cfg.task.name)
    grid = grid_for(ctx)  # before any expensive work: a malformed grid fails at once
    kind, ignore = direction_settings(ctx)
    count, index = shard_settings(ctx)
    surf_path = surface_path(ctx, count)
    check_surface_resources(grid.size, 2 * len(list(cfg.eval.splits)), surf_path, figures=bool(cfg.plot.enabled))
    dataset = dataset_for(ctx)
    ckpt_path = ensure_checkpoint(ctx)
    model, ckpt = load_for_analysis(ctx, ckpt_path, dataset)
    dirs, dinfo = make_directions(ctx, model, ckpt, kind, ignore, save=False)
    dir_list = [dirs["xdirection"]] + ([dirs["ydirection"]] if "ydirection" in dirs else [])
    cos = D.cosine_similarity(dir_list[0], dir_list[1]) if len(dir_list) == 2 else None
    norms = [D.norm(d) for d in dir_list]

    precision = precision_for(ctx)
    splits = eval_splits(ctx, dataset, precision)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    space = WeightSpace(model, kind, dir_list)
    forward = torch.compile(model) if precision.compile else None

    model_cfg = ckpt.get("model_cfg") or ctx.container(cfg.model)
    fingerprint = {
        "task": task, "grid": [grid.x.spec()] + ([grid.y.spec()] if grid.y else []),
        "model": model_cfg, "checkpoint_sha256": file_sha256(ckpt_path),
        "directions_sha256": tensors_sha256([t for d in dir_list for t in d]), "direction_type": kind,
        "dataset": dataset_identity(ctx), "splits": list(splits), "loss": str(cfg.eval.loss),
        "data_split": [int(cfg.eval.data_split), int(cfg.eval.split_idx)], "precision": precision.mode,
    }
    attrs = {
        "task": task, "model": model_cfg.get("name", "?"), "dataset": dataset.name,
        "normalization": dinfo.get("normalization", "none"), "checkpoint": str(Path(ckpt_path).resolve()),
        "dir_file": dinfo["dir_file"], "direction_info": {k: v for k, v in dinfo.items() if k != "pending_save"}, "cosine_similarity": "nan" if cos is None else cos,
        "config": ctx.container(cfg), "versions": versions(), "precision": precision.mode,
    }
    store_path = shard_path(surf_path, count, index) if count > 1 else surf_path
    indices = shard_indices(grid.size, count, index) if count > 1 else None
    store = SurfaceFile(store_path, grid, metric_names(list(splits)), fingerprint=fingerprint, attrs=attrs,
                        indices=indices, extra_datasets={"dir_file": dinfo["dir_file"]},
                        move_corrupt_aside=bool(cfg.get("surface_recover", False)))
    with store:
        save_pending_directions(dirs, dinfo)  # only now: the surface file accepted this config
        todo = len(store.pending())
        what = f"shard {index} of {count}: {len(store.indices)} of {grid.size}" if count > 1 else f"{grid.size}"
        print(f"{task}: {what} points ({store.num_done} already done, {todo} to compute) -> {store_path}")
        stats = compute_surface(model, space, grid, store, splits, loss=str(cfg.eval.loss),
                                batch_size=eval_batch_size(ctx), precision=precision, progress=ctx.progress,
                                forward=forward, points_per_pass=int(cfg.eval.get("points_per_pass", 1)))
    if count > 1:
        try:
            merged = merge_shards(surf_path, count, require_complete=False)
        except UserError as e:  # another shard is merging right now, or a shard is inconsistent
            print(f"not merged yet: {e}")
            merged = None
        if merged is None:
            return {"shard": index, "shard_count": count, "shard_file": str(store_path), **stats}
        print(f"all {count} shards done: merged into {surf_path}")
    surface = read_surface(surf_path)
    summary = summarize(surface, grid, task)
    # This checkpoint's sharpness, from the surface and from the model (which compute_surface left
    # at the origin); stored in the surface file's attributes and logged with the summary.
    sharp = sharpness_summary(surface, ctx.container(cfg.get("sharpness")), model=model,
                              data=splits.get("train"), loss=str(cfg.eval.loss))
    if sharp:
        store_sharpness(surf_path, sharp)
        summary.update(sharp)
    summary.update(stats)
    summary.update({"surface_file": str(surf_path), "dir_file": dinfo["dir_file"], "direction_norms": norms})
    if cos is not None:
        summary["cosine_similarity"] = cos
        print(f"cosine similarity of the two directions: {cos:.3e}")
    if summary.get("train_loss/nonfinite", 0):
        print(f"warning: {summary['train_loss/nonfinite']} points have a NaN or infinite training loss; stored as such, masked in figures")
    if cfg.plot.enabled:
        figs = render_surface(surface, ctx.out_dir, ctx.container(cfg.plot))
        ctx.tracker.log_images(figs, prefix=f"{task}/")
        for f in figs:
            if f.suffix == ".html":
                ctx.tracker.log_html(f, f"{task}/{f.stem}")
        summary["figures"] = [str(f) for f in figs]
    if grid.ndim == 1:
        done = surface["done"].ravel()
        curves = {k: np.where(done, surface[k], np.nan) for k in surface if k.endswith(("_loss", "_acc"))}
        ctx.tracker.log_curve(task, surface["x"], curves, xname="alpha")
    ctx.tracker.artifact([surf_path, Path(dinfo["dir_file"])], name=f"{task}-surface", kind="surface")
    return summary


def summarize(surface: dict[str, Any], grid: Grid, task: str) -> dict[str, Any]:
    """Loss/accuracy at the centre (the checkpoint: a=0, b=0), minimum, non-finite counts."""
    done = surface["done"].ravel()
    centre = int(np.argmin(np.abs(grid.points()).sum(axis=1)))
    out: dict[str, Any] = {"points": grid.size, "points_done": int(done.sum())}
    for key in [k for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in surface]:
        v = np.asarray(surface[key], dtype=float).ravel()
        out[f"{key}/centre"] = float(v[centre]) if done[centre] else math.nan
        finite = done & np.isfinite(v)
        if finite.any():
            best = int(np.nanargmin(np.where(finite, v, np.inf))) if key.endswith("loss") else int(np.nanargmax(np.where(finite, v, -np.inf)))
            out[f"{key}/{'min' if key.endswith('loss') else 'max'}"] = float(v[best])
            out[f"{key}/argbest"] = [float(c) for c in grid.point(best)]
        out.update({f"{key}/{k}": n for k, n in finite_summary(v, done).items()})
    return out
