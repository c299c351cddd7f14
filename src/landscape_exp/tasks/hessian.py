"""task=hessian: the Hessian (or GGN / empirical Fisher) of the full-data loss at one checkpoint
(Sagun et al. 2017; Ghorbani et al. 2019): top-k and bottom-k eigenpairs with residuals, the
Hutchinson trace, the SLQ density with its bulk edge, per-layer block spectra and the loss along
the top and bottom eigenvectors; the eigenvectors are saved as a direction file (``xdirection`` =
top, ``ydirection`` = bottom) for ``direction=hessian``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from landscape_exp import hessian as H
from landscape_exp.errors import UserError
from landscape_exp.figures.hessian import hessian_title, spectrum_figures
from landscape_exp.io.provenance import file_sha256, versions
from landscape_exp.job.checkpoints import ensure_checkpoint, load_for_analysis, model_config
from landscape_exp.job.context import RunContext
from landscape_exp.job.hessian_inputs import describe, hessian_data
from landscape_exp.job.plan import plan_job
from landscape_exp.surface.grid import Axis, parse_axis
from landscape_exp.weights import directions as D
from landscape_exp.weights.params import select_parameters, vector_to_direction

CURVE_POINTS = 51  # points of the automatic 1D range along the eigenvectors


def run(ctx: RunContext) -> dict[str, Any]:
    s, hs = ctx.settings, ctx.settings.hessian
    assert hs is not None
    if s.direction.type != "weights":
        raise UserError(f"task=hessian differentiates the parameters: direction.type={s.direction.type!r} "
                        "is not allowed; use weights")
    if s.y:
        raise UserError(f"task 'hessian' draws 1D curves; drop y={s.y}")
    axis = parse_axis(s.x, "x") if s.x else None  # a malformed x fails before any work
    dataset = ctx.dataset()
    plan_job(ctx, dataset, f"the Hessian spectrum (top and bottom {hs.spectrum.k}, trace, density) at one checkpoint")
    data, idx = hessian_data(ctx, dataset)  # a bad subset size fails before any training
    ckpt_path = ensure_checkpoint(ctx)
    model, ckpt = load_for_analysis(ctx, ckpt_path, dataset)
    model_cfg = model_config(ckpt, ctx)
    ignore = s.direction.ignore
    sel = select_parameters(model, ignore)

    def make(params=None):  # the whole operator, or one layer's diagonal block
        return H.make_operator(model, sel, data, loss=s.eval.loss, batch_size=hs.batch_size_for(ctx.device),
                               curvature=hs.curvature, params=params)

    op = make()
    print(describe(ctx, sel, len(data)))
    report = H.spectrum_report(op, hs.spectrum, selection=sel, make_block=make, say=print)
    print(f"lambda_max = {report.lambda_max:.6g}, lambda_min = {report.lambda_min:.6g}, "
          f"|lambda_min/lambda_max| = {report.ratio:.4g}, trace = {report.trace:.6g} +- {report.trace_stderr:.2g} "
          f"({report.num_hvp['total']} HVPs, {report.seconds['total']:.1f} s)")
    print(report.convergence().line())

    # 1D curves along the top and bottom eigenvectors, against the quadratic model L0 + g.v a + lambda a^2/2.
    with H.fp32(ctx.device):
        loss0 = op.loss()
        grad = op.gradient().double().cpu()
    top_v, bot_v = report.top.vectors[0], report.bottom.vectors[0]
    slopes = (float(grad @ top_v.double()), float(grad @ bot_v.double()))
    alphas = (axis or Axis(-H.curve_half_width(report.lambda_max), H.curve_half_width(report.lambda_max),
                           CURVE_POINTS)).coordinates
    t0 = time.perf_counter()
    curve_loss, curve_acc = H.loss_along(model, sel, torch.stack([top_v, bot_v]), alphas, data, loss=s.eval.loss,
                                         batch_size=ctx.eval_batch_size)
    curve_seconds = time.perf_counter() - t0

    # Direction file in the original tool's layout: full model.parameters() lists, zeros on ignored tensors.
    dir_path = ctx.out_dir / "hessian_directions.h5"
    ckpt_abs = str(Path(ckpt_path).resolve())
    D.save_directions(dir_path, {"xdirection": vector_to_direction(top_v, model, sel),
                                 "ydirection": vector_to_direction(bot_v, model, sel)},
                      names=[n for n, _ in model.named_parameters()],
                      attrs={"source": "hessian", "type": "weights", "ignore": ignore or "none",
                             "xeigenvalue": report.lambda_max, "yeigenvalue": report.lambda_min,
                             "checkpoint": ckpt_abs, "normalization": "none (unit eigenvectors)"})
    sp = hs.spectrum
    settings = {**hs.identity(), "curvature": hs.curvature, "k": sp.k, "blocks": sp.blocks, "trace_probes": sp.trace_probes,
                "density": {"probes": sp.density_probes, "iters": sp.density_iters, "num_points": sp.density_points},
                "batch_size": hs.batch_size_for(ctx.device), "ignore": ignore or "none"}
    h5_path = H.write_spectrum_file(
        ctx.out_dir / "hessian.h5", report, sel,
        datasets={"sample_indices": idx.numpy(), "curve_alpha": alphas, "curve_top_loss": curve_loss[0],
                  "curve_bottom_loss": curve_loss[1], "curve_top_acc": curve_acc[0], "curve_bottom_acc": curve_acc[1]},
        attrs={"loss": loss0, "grad_norm": float(grad.norm()), "slope_top": slopes[0], "slope_bottom": slopes[1],
               "num_samples": len(data), "checkpoint": ckpt_abs, "checkpoint_sha256": file_sha256(ckpt_path),
               "model": model_cfg.get("name", "?"), "dataset": dataset.name, "dir_file": str(dir_path.resolve()),
               "settings": settings, "curve_seconds": curve_seconds, "config": ctx.config,
               "versions": versions(), "device": str(ctx.device), "curvature": hs.curvature},
    )

    h = max(abs(float(alphas[0])), abs(float(alphas[-1])))
    summary: dict[str, Any] = {
        **H.report_summary(report), "curvature": hs.curvature, "loss": loss0, "grad_norm": float(grad.norm()),
        "dim": sel.dim, "num_samples": len(data), "hessian_file": str(h5_path), "dir_file": str(dir_path),
        "surface_hint": f"python run.py task=surface2d direction=hessian direction.file={dir_path.resolve()} "
                        f"checkpoint={ckpt_abs} x=-{h:.3g}:{h:.3g}:51 y=-{h:.3g}:{h:.3g}:51",
    }
    ctx.tracker.log(H.report_metrics(report))
    if s.plot.enabled:
        title = hessian_title(model_cfg.get("name", "?"), dataset.name, {"hessian": "Hessian", "ggn": "GGN",
                                                                         "fisher": "Empirical Fisher"}[hs.curvature])
        figs = spectrum_figures(report, sel.dim, ctx.out_dir, title=title, alphas=alphas, curves=(curve_loss[0], curve_loss[1]),
                                loss0=loss0, slopes=slopes)
        ctx.tracker.log_images(figs, prefix="hessian/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.log_curve("hessian/curves", alphas, {"top_loss": curve_loss[0], "bottom_loss": curve_loss[1]}, xname="a")
    ctx.tracker.artifact([h5_path, dir_path], name="hessian", kind="hessian")
    return summary
