"""task=hessian_surface: lambda_max, lambda_min and |lambda_min/lambda_max| at every point of a 2D
grid spanned by the same directions as task=surface2d (Li et al. 2018, section 6), resumable."""

from __future__ import annotations

from typing import Any

import numpy as np

from landscape_exp import hessian as H
from landscape_exp.figures.hessian import hessian_surface_figures
from landscape_exp.job.checkpoints import ensure_checkpoint, load_for_analysis, model_config
from landscape_exp.job.context import RunContext
from landscape_exp.job.hessian_inputs import describe, hessian_data
from landscape_exp.job.plan import plan_job
from landscape_exp.surface.job import Origin, check_target, grid_for, grid_work, publish, run_surface, surface_target
from landscape_exp.surface.measures import HessianMeasure
from landscape_exp.surface.plane import build_plane
from landscape_exp.surface.summary import summarize_range
from landscape_exp.weights.params import select_parameters
from landscape_exp.weights.space import WeightSpace


def run(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    hs = s.hessian
    assert hs is not None
    grid = grid_for(ctx, 2)
    target = surface_target(ctx, "hessian_surface.h5", shardable=False)
    check_target(ctx, target, grid, 6)
    dataset = ctx.dataset()
    plan_job(ctx, dataset, f"lambda_max and lambda_min at each point of {grid_work(grid)}")
    data, idx = hessian_data(ctx, dataset)
    ckpt_path = ensure_checkpoint(ctx)
    model, ckpt = load_for_analysis(ctx, ckpt_path, dataset)
    model_cfg = model_config(ckpt, ctx)
    plane = build_plane(ctx, model, model_cfg, 2, "file" if s.direction.file else "random")
    sel = select_parameters(model, s.direction.ignore)
    op = H.make_operator(model, sel, data, loss=s.eval.loss, batch_size=hs.batch_size_for(ctx.device),
                         curvature=hs.curvature)
    print(describe(ctx, sel, len(data)))
    measure = H.ConvergenceWatch(HessianMeasure(op, hs, s.direction.ignore, len(data), sel.dim))
    surface, stats = run_surface(
        ctx, target=target, grid=grid, origin=Origin(ckpt_path, model_cfg, dataset.name), plane=plane, measure=measure,
        space=WeightSpace(model, s.direction.type, plane.directions), extra_attrs={"direction_info": plane.info},
        extra_datasets={"sample_indices": idx.numpy()}, desc="hessian surface",
    )
    assert surface is not None  # not shardable: always complete
    summary = summarize_range(surface, grid, ("lambda_max", "lambda_min", "ratio", measure.loss_key))
    summary.update({"points_computed": stats["points_computed"], "seconds": stats["seconds"],
                    "surface_file": str(target.path), "dir_file": str(plane.dir_file), "dim": sel.dim,
                    "num_samples": len(data), "curvature": hs.curvature, **measure.summary()})
    print(measure.line())
    ctx.tracker.log({"hessian_surface/unconverged_points": len(measure.unconverged),
                     "hessian_surface/max_residual_relative": measure.max_relative})
    ok = surface["done"].ravel()
    if ok.any():
        summary["num_hvp/mean_per_point"] = float(np.asarray(surface["num_hvp"], dtype=float).ravel()[ok].mean())
        summary["seconds/mean_per_point"] = float(np.asarray(surface["seconds"], dtype=float).ravel()[ok].mean())
    figs = hessian_surface_figures(surface, ctx.out_dir, s.plot, model_name=model_cfg.get("name", "?"),
                                   dataset_name=dataset.name, loss_key=measure.loss_key,
                                   normalization=plane.info.get("normalization")) if s.plot.enabled else []
    figures = publish(ctx, "hessian_surface", figs, [target.path, plane.dir_file], "hessian_surface")
    if figures:
        summary["figures"] = figures
    return summary
