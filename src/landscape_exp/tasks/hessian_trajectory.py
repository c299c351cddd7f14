"""task=hessian_trajectory: curvature at every saved epoch of a training run (Jastrzebski et al.
2019; Sagun et al. 2017; Gur-Ari et al. 2018): the top-k eigenpairs (kept), the overlap of
consecutive top-k subspaces, the gradient's fraction in the top-k subspace, the trace and the
outliers above the bulk; resumable: finished epochs are skipped when rerun in the same dir."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from landscape_exp import hessian as H
from landscape_exp.errors import UserError
from landscape_exp.figures import save
from landscape_exp.figures.hessian import figure_curvature_along_training, figure_lambda_max, hessian_title
from landscape_exp.hessian.density import BULK_RULE
from landscape_exp.io.checkpoint import load_checkpoint
from landscape_exp.io.provenance import file_sha256, versions
from landscape_exp.job.checkpoints import check_model_fits_dataset, checkpoint_model, ensure_checkpoint
from landscape_exp.job.context import RunContext
from landscape_exp.job.costs import unit_done
from landscape_exp.job.hessian_inputs import hessian_data
from landscape_exp.job.plan import plan_job
from landscape_exp.training.runs import epoch_checkpoints, epoch_of
from landscape_exp.weights.params import select_parameters


def run(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    hs = s.hessian
    assert hs is not None
    sp, ignore = hs.spectrum, s.direction.ignore
    dataset = ctx.dataset()
    plan_job(ctx, dataset, "the top of the Hessian spectrum at every saved epoch of a training run")
    data, _ = hessian_data(ctx, dataset)
    ckpts = epoch_checkpoints(s.run_dir if s.run_dir else ensure_checkpoint(ctx).parent)
    folder = ckpts[0].parent
    fingerprint = {"task": "hessian_trajectory", "hessian": hs.identity(), "k": sp.k, "trace_probes": sp.trace_probes,
                   "ignore": ignore or "none", "dataset": s.dataset_identity(), "loss": s.eval.loss, "precision": "fp32",
                   "density": {"probes": sp.density_probes, "iters": sp.density_iters}}
    path = ctx.out_dir / "hessian_trajectory.h5"
    rows = H.read_trajectory(path, fingerprint)
    attrs = {"task": "hessian_trajectory", "run_dir": str(folder.resolve()), "dataset": dataset.name,
             "num_samples": len(data), "num_classes": dataset.num_classes, "curvature": hs.curvature,
             "bulk_rule": BULK_RULE,
             "config": ctx.config, "versions": versions()}
    print(f"hessian_trajectory: {len(ckpts)} epoch checkpoints in {folder} -> {path}")
    computed, model_name = 0, "?"
    bar = tqdm(ckpts, desc="hessian trajectory", unit="epoch", disable=not ctx.progress)
    for i, p in enumerate(bar):
        sha, ckpt = file_sha256(p), load_checkpoint(p)
        epoch = epoch_of(p, ckpt)
        model_name = (ckpt.get("model_cfg") or {}).get("name", model_name)
        if epoch in rows and rows[epoch]["checkpoint_sha256"] == sha:
            continue  # done in an earlier run of this task on this very file
        t0 = time.perf_counter()
        model = checkpoint_model(ctx, ckpt, f"checkpoint {str(p)!r}")
        check_model_fits_dataset(model, dataset, model_name)
        model = model.to(ctx.device).eval()
        sel = select_parameters(model, ignore)
        op = H.make_operator(model, sel, data, loss=s.eval.loss, batch_size=hs.batch_size_for(ctx.device),
                             curvature=hs.curvature)
        if sp.k > sel.dim:
            raise UserError(f"hessian.k={sp.k} exceeds the number of parameters the Hessian acts on ({sel.dim})")
        # The same seed at every epoch: common random probes make epochs comparable.
        rows[epoch] = {"epoch": epoch, **H.trajectory_point(op, sp), "checkpoint": str(Path(p).resolve()),
                       "checkpoint_sha256": sha}
        H.write_trajectory(path, rows, fingerprint=fingerprint, attrs=attrs)  # durable after every epoch
        computed += 1
        r = rows[epoch]
        if not ctx.progress:  # no bar (a log file, a batch job): a line per epoch instead
            unit_done("hessian_trajectory", "epoch", f"epoch {epoch}: lambda_max = {r['lambda_max']:.6g}, trace = "
                      f"{r['trace']:.6g}", time.perf_counter() - t0, len(ckpts) - i - 1, computed == 1,
                      lambda: "fewer samples (hessian.num_samples), fewer probes (hessian.trace_probes), or device=cuda")
        ctx.tracker.log({"hessian/lambda_max": r["lambda_max"], "hessian/trace": r["trace"], "epoch": epoch,
                         "hessian/lambda_max_residual": float(r["top_residuals"][0]),
                         "hessian/converged": float(np.all(r["top_converged"])),
                         "hessian/gradient_top_fraction": r["gradient_top_fraction"], "hessian/num_outliers": r["num_outliers"]})
        bar.set_postfix(epoch=epoch, lambda_max=f"{r['lambda_max']:.4g}")
    bar.close()
    if computed == 0 and rows:
        H.write_trajectory(path, rows, fingerprint=fingerprint, attrs=attrs)  # refresh the attributes only
    epochs = sorted(rows)
    col = H.trajectory_columns(rows)
    dim = int(rows[epochs[0]]["top_eigenvectors"].shape[1]) if epochs else 0
    bad = [int(e) for e, ok in zip(epochs, col["converged"]) if not ok]
    print(f"top-{sp.k} eigenpairs converged at all {len(epochs)} epochs" if not bad else
          f"WARNING: top-{sp.k} eigenpairs did NOT converge at epochs {bad} (residual > tol {sp.tol:g} x ||H||): "
          "raise hessian.max_iter")
    keys = ("lambda_max", "top_eigenvalues", "trace", "trace_stderr", "loss", "gradient_top_fraction", "num_outliers",
            "bulk_edge", "lambda_max_residual", "overlap", "converged")
    summary: dict[str, Any] = {"epochs": epochs, **{k: col[k].tolist() for k in keys}, "epochs_computed": computed,
                               "converged_all": not bad, "unconverged_epochs": bad, "num_classes": dataset.num_classes,
                               "curvature": hs.curvature, "trajectory_file": str(path), "run_dir": str(folder),
                               "num_hvp": int(sum(rows[e]["num_hvp"] for e in epochs))}
    if sp.density_probes:
        summary["bulk_rule"] = BULK_RULE
    if epochs:
        summary["lambda_max/peak_epoch"] = int(epochs[int(np.nanargmax(col["lambda_max"]))])
    if s.plot.enabled and epochs:
        traced, e = sp.trace_probes > 0, np.array(epochs)
        title = hessian_title(model_name, dataset.name, "Hessian along training")
        figs = save(figure_lambda_max(e, col["lambda_max"], loss=col["loss"], title=title, residual=col["lambda_max_residual"],
                                      top=col["top_eigenvalues"], trace=col["trace"] if traced else None,
                                      trace_stderr=col["trace_stderr"] if traced else None), ctx.out_dir / "hessian_trajectory")
        figs += save(figure_curvature_along_training(e, col["overlap"], col["gradient_top_fraction"], k=sp.k, dim=dim,
                                                     title=title, num_outliers=col["num_outliers"] if sp.density_probes else None,
                                                     num_classes=dataset.num_classes),
                     ctx.out_dir / "hessian_trajectory_curvature")
        ctx.tracker.log_images(figs, prefix="hessian_trajectory/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.log_curve("hessian/trajectory", epochs, {k: col[k].tolist() for k in ("lambda_max", "trace", "overlap",
                                                                                     "gradient_top_fraction", "num_outliers")},
                          xname="epoch")
    ctx.tracker.artifact([path], name="hessian_trajectory", kind="hessian")
    return summary
