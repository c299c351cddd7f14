"""task=hessian_trajectory: lambda_max (and the Hutchinson trace) at every saved epoch of a training
run (Jastrzebski et al. 2019), resumable: finished epochs are skipped when rerun in the same dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from landscape_exp import hessian as H
from landscape_exp.checkpoint import load_checkpoint, model_from_checkpoint
from landscape_exp.context import RunContext
from landscape_exp.errors import UserError
from landscape_exp.figures import save
from landscape_exp.figures.hessian import figure_lambda_max, hessian_title
from landscape_exp.hessian.inputs import hessian_data
from landscape_exp.model_source import check_model_fits_dataset, ensure_checkpoint
from landscape_exp.provenance import file_sha256, versions
from landscape_exp.runs import epoch_checkpoints, epoch_of


def run(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    hs = s.hessian
    assert hs is not None
    sp, ignore = hs.spectrum, s.direction.ignore
    dataset = ctx.dataset()
    data, _ = hessian_data(ctx, dataset)
    ckpts = epoch_checkpoints(s.run_dir if s.run_dir else ensure_checkpoint(ctx).parent)
    folder = ckpts[0].parent
    fingerprint = {"task": "hessian_trajectory", "hessian": hs.identity(), "k": sp.k, "trace_probes": sp.trace_probes,
                   "ignore": ignore or "none", "dataset": s.dataset_identity(), "loss": s.eval.loss, "precision": "fp32"}
    path = ctx.out_dir / "hessian_trajectory.h5"
    rows = H.read_trajectory(path, fingerprint)
    attrs = {"task": "hessian_trajectory", "run_dir": str(folder.resolve()), "dataset": dataset.name,
             "num_samples": len(data), "config": dict(s.config), "versions": versions()}
    print(f"hessian_trajectory: {len(ckpts)} epoch checkpoints in {folder} -> {path}")
    computed, model_name = 0, "?"
    bar = tqdm(ckpts, desc="hessian trajectory", unit="epoch", disable=not ctx.progress)
    for p in bar:
        sha, ckpt = file_sha256(p), load_checkpoint(p)
        epoch = epoch_of(p, ckpt)
        model_name = (ckpt.get("model_cfg") or {}).get("name", model_name)
        if epoch in rows and rows[epoch]["checkpoint_sha256"] == sha:
            continue  # done in an earlier run of this task on this very file
        model = model_from_checkpoint(ckpt, f"checkpoint {str(p)!r}", None if ckpt.get("model_cfg") else dict(s.model))
        check_model_fits_dataset(model, dataset, model_name)
        model = model.to(ctx.device).eval()
        sel = H.select_parameters(model, ignore)
        op = H.make_operator(model, sel, data, loss=s.eval.loss, batch_size=hs.batch_size_for(ctx.device))
        if sp.k > sel.dim:
            raise UserError(f"hessian.k={sp.k} exceeds the number of parameters the Hessian acts on ({sel.dim})")
        # The same seed at every epoch: common random probes make epochs comparable.
        res = H.top_and_trace(op, k=sp.k, method=sp.method, tol=sp.tol, max_iter=sp.max_iter,
                              trace_probes=sp.trace_probes, seed=hs.seed)
        with H.fp32(ctx.device):
            loss = op.loss()
        rows[epoch] = {"epoch": epoch, "lambda_max": float(res["top_eigenvalues"][0]), "trace": res["trace"],
                       "trace_stderr": res["trace_stderr"], "loss": loss, "num_hvp": int(res["num_hvp"]),
                       "seconds": res["seconds"], "top_eigenvalues": res["top_eigenvalues"],
                       "checkpoint": str(Path(p).resolve()), "checkpoint_sha256": sha}
        H.write_trajectory(path, rows, fingerprint=fingerprint, attrs=attrs)  # durable after every epoch
        computed += 1
        ctx.tracker.log({"hessian/lambda_max": rows[epoch]["lambda_max"], "hessian/trace": res["trace"], "epoch": epoch})
        bar.set_postfix(epoch=epoch, lambda_max=f"{rows[epoch]['lambda_max']:.4g}")
    bar.close()
    if computed == 0 and rows:
        H.write_trajectory(path, rows, fingerprint=fingerprint, attrs=attrs)  # refresh the attributes only
    epochs = sorted(rows)
    col = {k: np.array([rows[e][k] for e in epochs]) for k in ("lambda_max", "trace", "trace_stderr", "loss")}
    summary: dict[str, Any] = {"epochs": epochs, **{k: v.tolist() for k, v in col.items()}, "epochs_computed": computed,
                               "trajectory_file": str(path), "run_dir": str(folder),
                               "num_hvp": int(sum(rows[e]["num_hvp"] for e in epochs))}
    if epochs:
        summary["lambda_max/peak_epoch"] = int(epochs[int(np.nanargmax(col["lambda_max"]))])
    figs: list[Path] = []
    if s.plot.enabled and epochs:
        traced = sp.trace_probes > 0
        figs = save(figure_lambda_max(np.array(epochs), col["lambda_max"], loss=col["loss"],
                                      title=hessian_title(model_name, dataset.name, "Hessian along training"),
                                      trace=col["trace"] if traced else None, trace_stderr=col["trace_stderr"] if traced else None),
                    ctx.out_dir / "hessian_trajectory")
        ctx.tracker.log_images(figs, prefix="hessian_trajectory/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.log_curve("hessian/trajectory", epochs, {"lambda_max": col["lambda_max"].tolist(), "trace": col["trace"].tolist()},
                          xname="epoch")
    ctx.tracker.artifact([path], name="hessian_trajectory", kind="hessian")
    return summary
