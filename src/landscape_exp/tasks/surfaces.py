"""task=surface1d | surface2d | interp1d | plane: compute a loss surface, write it, draw it."""

from __future__ import annotations

from typing import Any

import numpy as np

from landscape_exp.config.tasks import task_spec
from landscape_exp.figures import render_surface
from landscape_exp.job.checkpoints import ensure_checkpoint, load_for_analysis, model_config
from landscape_exp.job.context import RunContext
from landscape_exp.job.plan import plan_job
from landscape_exp.measures.paths import surface_barrier_annotation, surface_path_measures
from landscape_exp.measures.record import measures_json
from landscape_exp.measures.sharpness import model_flatness, sharpness_summary
from landscape_exp.surface.job import (
    Origin,
    check_target,
    grid_for,
    grid_work,
    loss_measure,
    publish,
    result_summary,
    run_surface,
    surface_result,
    surface_target,
)
from landscape_exp.surface.plane import build_plane
from landscape_exp.surface.seeds import seed_context, seeds_summary
from landscape_exp.surface.store import metric_names, store_measures, store_sharpness
from landscape_exp.surface.summary import summarize
from landscape_exp.weights.space import WeightSpace


def run(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    if s.direction.seeds:  # surface1d over several random directions: one surface each, then their spread
        return seeds_summary(ctx, s.direction.seeds, [run(seed_context(ctx, k, i == 0)) for i, k in enumerate(s.direction.seeds)])
    ndim = task_spec(s.task).ndim
    grid = grid_for(ctx, ndim)  # before any expensive work: a malformed grid fails at once
    target = surface_target(ctx)
    check_target(ctx, target, grid, len(metric_names(s.eval.splits)))
    dataset = ctx.dataset()
    plan_job(ctx, dataset, grid_work(grid))
    ckpt_path = ensure_checkpoint(ctx)
    model, ckpt = load_for_analysis(ctx, ckpt_path, dataset)
    model_cfg = model_config(ckpt, ctx)
    source = "file" if s.direction.file else ("checkpoints" if task_spec(s.task).between_models else "random")
    plane = build_plane(ctx, model, model_cfg, ndim, source)
    cos = plane.cosine()

    measure = loss_measure(ctx, model, dataset)
    model = measure.model
    surface, stats = run_surface(
        ctx, target=target, grid=grid, origin=Origin(ckpt_path, model_cfg, dataset.name), plane=plane,
        measure=measure, space=WeightSpace(model, s.direction.type, plane.directions),
        extra_attrs={"direction_info": plane.info, "cosine_similarity": "nan" if cos is None else cos},
    )
    if surface is None:  # this shard is done; another one merges
        return stats
    with surface_result(ctx, target, ckpt_path) as rctx:  # a merged surface: its own directory and W&B run
        summary = summarize(surface, grid)
        # This checkpoint's sharpness, from the surface and from the model (which the engine left at
        # the origin); stored in the surface file's attributes and logged with the summary.
        sharp = sharpness_summary(surface, s.sharpness, model=model, data=measure.splits.get("train"), loss=s.eval.loss,
                                   progress=ctx.progress)
        if sharp:
            store_sharpness(target.path, sharp)
            summary.update(sharp)
        # Scalar measures (docs/measures.md): an interpolation's connectivity, the minimum's flatness.
        measures = {**surface_path_measures(s.task, surface),
                    **model_flatness(s.sharpness, model, measure.splits.get("train"), s.eval.loss)}
        if measures:
            store_measures(target.path, measures)
            summary["measures"] = measures_json(measures)
        summary.update(stats)
        summary.update({"surface_file": str(target.path), "dir_file": str(plane.dir_file),
                        "direction_norms": plane.norms()})
        if cos is not None:
            summary["cosine_similarity"] = cos
            print(f"cosine similarity of the two directions: {cos:.3e}")
        if summary.get("train_loss/nonfinite", 0):
            print(f"warning: {summary['train_loss/nonfinite']} points have a NaN or infinite training loss; "
                  "stored as such, masked in figures")
        figs = (render_surface(surface, rctx.out_dir, s.plot, barrier=surface_barrier_annotation(surface)) if s.plot.enabled
                else [])
        if grid.ndim == 1:
            done = surface["done"].ravel()
            curves = {k: np.where(done, surface[k], np.nan) for k in surface if k.endswith(("_loss", "_acc"))}
            rctx.tracker.log_curve(s.task, surface["x"], curves, xname="alpha")
        figures = publish(rctx, s.task, figs, [target.path, plane.dir_file], f"{s.task}-surface")
        if figures:
            summary["figures"] = figures
        return result_summary(ctx, rctx, target, summary, stats)
