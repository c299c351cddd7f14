"""task=trajectory: an optimization path on the plane of its top-2 principal components
(Li et al. 2018, section 7; the original tool's ``plot_trajectory.py``).

Inputs: ``run_dir=`` (a training run holding ``checkpoints/epoch_*.pt``), an explicit list
``checkpoints=[a.pt,b.pt,...]`` (the last one is theta_final), or neither: then the cached training
run of the current model/dataset/optim/seed config (trained if missing). Outputs in the run
directory: ``directions.h5`` (the PCA directions, original layout, with the explained variance),
``projection.h5`` (coordinates of every checkpoint), ``surface.h5`` (the loss on the PCA plane
around theta_final; resumable) and ``trajectory_contour.png/.pdf``.
"""

from __future__ import annotations

import math
from typing import Any

from landscape_exp.errors import UserError
from landscape_exp.figures import render_surface, save
from landscape_exp.figures.trajectory import figure_trajectory
from landscape_exp.io.files import write_json
from landscape_exp.job.checkpoints import load_for_analysis, model_config
from landscape_exp.job.context import RunContext
from landscape_exp.job.plan import plan_job
from landscape_exp.surface.grid import covering_grid
from landscape_exp.surface.job import Origin, check_target, loss_measure, publish, run_surface, surface_target
from landscape_exp.surface.path_plane import checkpoint_paths, path_plane, pct, write_projection
from landscape_exp.surface.store import metric_names
from landscape_exp.surface.summary import summarize
from landscape_exp.weights import pca as T
from landscape_exp.weights.space import WeightSpace


def run(ctx: RunContext) -> dict[str, Any]:
    s, t = ctx.settings, ctx.settings.trajectory
    assert t is not None
    target = surface_target(ctx, shardable=False)
    paths, source = checkpoint_paths(ctx)
    if len(paths) < 3:
        raise UserError(f"a trajectory needs at least 3 checkpoints for 2 principal components; got {len(paths)} from {source}")
    dataset = ctx.dataset()
    plan_job(ctx, dataset, f"the PCA plane of {len(paths)} checkpoints from {source}, a {t.num}x{t.num} loss grid on it")
    model, ckpt = load_for_analysis(ctx, paths[-1], dataset)
    model_cfg = model_config(ckpt, ctx)
    pp = path_plane(ctx, model, ckpt.get("model_cfg"), paths)
    r1, r2 = (float(pp.ratios[0]), float(pp.ratios[1])) if pp.ratios.size >= 2 else (math.nan, math.nan)
    print(f"explained variance: PC1 {pct(r1)}, PC2 {pct(r2)} (together {pct(r1 + r2)}); a random walk gives "
          f"{pct(T.RANDOM_WALK_RATIOS[0])} and {pct(T.RANDOM_WALK_RATIOS[1])} (Antognini & Sohl-Dickstein 2018)")

    grid = covering_grid(pp.coords, t.margin, t.num, s.x, s.y)
    check_target(ctx, target, grid, len(metric_names(s.eval.splits)))
    measure = loss_measure(ctx, model, dataset)
    model = measure.model
    proj_path = ctx.out_dir / "projection.h5"
    surface, stats = run_surface(
        ctx, target=target, grid=grid, origin=Origin(paths[-1], model_cfg, dataset.name), plane=pp.plane,
        measure=measure, space=WeightSpace(model, s.direction.type, pp.plane.directions), normalization="pca",
        extra_attrs={"proj_file": str(proj_path.resolve()), "explained_variance_ratio": pp.ratios},
    )
    assert surface is not None  # not shardable: always complete
    proj_file = write_projection(proj_path, pp, paths, {
        "dir_file": str(pp.plane.dir_file), "surf_file": str(target.path), "type": s.direction.type,
        "ignore": s.direction.ignore or "none", "source": source, "path_length": pp.path_length,
        "path_length_projected": pp.path_length_projected,
    })
    summary: dict[str, Any] = {**summarize(surface, grid), **stats}
    summary.update({
        "num_checkpoints": len(paths), "epochs": pp.epochs, "source": source, "direction_source": pp.source,
        "explained_variance_ratio": [r1, r2], "explained_variance_ratio/pc1": r1, "explained_variance_ratio/pc2": r2,
        "explained_variance_ratio/total": r1 + r2,
        "random_walk_ratio/pc1": T.RANDOM_WALK_RATIOS[0], "random_walk_ratio/pc2": T.RANDOM_WALK_RATIOS[1],
        "cosine_pc1_pc2": pp.plane.cosine(), "path_length": pp.path_length, "path_length_projected": pp.path_length_projected,
        # how much of the path's length the plane keeps (1: the path lies in the plane)
        "projected_length_fraction": pp.path_length_projected / pp.path_length if pp.path_length > 0 else math.nan,
        "distance_start_final": pp.start_distance, "start_xy": [float(v) for v in pp.coords[0]],
        "grid": [grid.x.spec(), grid.y.spec()], "surface_file": str(target.path), "dir_file": str(pp.plane.dir_file),
        "proj_file": str(proj_file),
    })
    if pp.result is not None:
        summary["explained_variance"] = [float(v) for v in pp.result.explained_variance]
    figs = []
    if s.plot.enabled:
        z_key = "train_loss" if "train_loss" in surface else f"{s.eval.splits[0]}_loss"
        title = (f"trajectory: {model_cfg.get('name', '?')} on {dataset.name}, {len(paths)} checkpoints\n"
                 f"PC1+PC2 explain {pct(r1 + r2)} of the path's variance (random walk: {pct(sum(T.RANDOM_WALK_RATIOS[:2]))})")
        figs = save(figure_trajectory(surface, z_key, pp.coords, pp.epochs, s.plot, title=title,
                                      xlabel=f"PC1: {pct(r1)} variance", ylabel=f"PC2: {pct(r2)} variance"),
                    ctx.out_dir / "trajectory_contour")
        if t.surface_figures:
            figs += render_surface(surface, ctx.out_dir, s.plot)
    figures = publish(ctx, "trajectory", figs, [target.path, pp.plane.dir_file, proj_file], "trajectory")
    if figures:
        summary["figures"] = figures
    write_json(ctx.out_dir / "trajectory.json", {k: summary[k] for k in (
        "num_checkpoints", "epochs", "explained_variance_ratio", "path_length", "path_length_projected", "start_xy")}
        | {"coordinates": pp.coords.tolist(), "checkpoints": [str(p) for p in paths]})
    return summary
