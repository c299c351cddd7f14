"""task=connect / connect_eval: mode connectivity (Garipov et al. 2018; Draxler et al. 2018).

``connect`` trains a one-bend curve (quadratic Bezier or polygonal chain) between two trained
checkpoints, saves it as ``curve.pt``, evaluates train and test loss and accuracy at
``connect.num_points`` values of t along the curve and along the straight segment (BatchNorm
statistics recomputed on the training data at every t), writes ``curve.h5`` and draws both on one
figure (``connect_curves.png/.pdf``). ``connect_eval curve_file=<curve.pt>`` re-evaluates a saved
curve without training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from landscape_exp.connect import curves as C
from landscape_exp.connect.files import curve_from_file, load_curve_file, save_curve
from landscape_exp.connect.report import curve_splits, evaluate_and_report
from landscape_exp.data.device import DeviceData
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import check_state_dict, load_checkpoint
from landscape_exp.io.provenance import file_sha256
from landscape_exp.job.checkpoints import (
    check_model_fits_dataset,
    check_same_architecture,
    ensure_checkpoint,
    load_for_analysis,
    model_config,
)
from landscape_exp.job.context import RunContext
from landscape_exp.job.plan import plan_job
from landscape_exp.models.loading import model_from_checkpoint


def run(ctx: RunContext) -> dict[str, Any]:
    """task=connect: train the curve, save it, evaluate it."""
    s, cs = ctx.settings, ctx.settings.connect
    assert cs is not None
    dataset = ctx.dataset()
    plan_job(ctx, dataset, f"a {cs.curve} curve trained for {cs.epochs} epochs between two minima, then it and the "
                             f"segment evaluated at {cs.num_points} points")
    p1 = ensure_checkpoint(ctx)
    p2 = ensure_checkpoint(ctx, seed_offset=1, explicit=cs.model2)
    if p1.resolve() == p2.resolve():
        raise UserError(f"both end points are {str(p1)!r}; give connect.model2 another checkpoint")
    model1, ck1 = load_for_analysis(ctx, p1, dataset)
    ck2 = load_checkpoint(p2)
    cfg1 = model_config(ck1, ctx)
    check_same_architecture("connect.model2", p2, ck2.get("model_cfg"), cfg1, f"checkpoint {str(p1)!r}")
    check_state_dict(model1, ck2["state_dict"], f"connect.model2 {str(p2)!r}")
    w2 = [ck2["state_dict"][n] for n, _ in model1.named_parameters()]
    curve = C.CurveModel(model1, [p.detach() for p in model1.parameters()], w2, cs.curve).to(ctx.device)

    # floats, as the curve-training state of earlier versions records them (it resumes only on a match)
    settings = {"epochs": float(cs.epochs), "lr": cs.lr, "momentum": cs.momentum, "weight_decay": cs.weight_decay,
                "batch_size": float(cs.batch_size)}
    identity = {"end1_sha256": file_sha256(p1), "end2_sha256": file_sha256(p2), "curve": cs.curve, **settings,
                "schedule": cs.schedule, "seed": s.seed, "loss": s.eval.loss, "dataset": s.dataset_identity()}
    train_data = DeviceData(dataset.train, dataset.mean, dataset.std, ctx.device)
    print(f"connect: training a {cs.curve} curve between {p1} and {p2} for {cs.epochs} epochs")
    history = C.train_curve(
        curve, train_data, epochs=cs.epochs, lr=cs.lr, batch_size=cs.batch_size, momentum=cs.momentum,
        weight_decay=cs.weight_decay, schedule=cs.schedule, loss=s.eval.loss, seed=s.seed,
        augment=s.dataset_identity().get("augment"), state_path=ctx.out_dir / "curve_training.pt", identity=identity,
        progress=ctx.progress, on_epoch=lambda m: ctx.tracker.log({f"curve/{k}": v for k, v in m.items()}),
    )
    info = {"checkpoint1": str(p1.resolve()), "checkpoint2": str(p2.resolve()), "model_cfg": cfg1,
            "curve_file": str((ctx.out_dir / "curve.pt").resolve())}
    curve_file = save_curve(ctx.out_dir / "curve.pt", curve, end1_state=ck1["state_dict"], end2_state=ck2["state_dict"],
                              model_cfg=cfg1, meta={"dataset": dataset.name, "checkpoint1": info["checkpoint1"],
                                                    "checkpoint2": info["checkpoint2"], "training": identity, "history": history})
    summary = _evaluate(ctx, curve, dataset, info)
    summary.update({"curve_file": str(curve_file), "checkpoint1": info["checkpoint1"], "checkpoint2": info["checkpoint2"],
                    "curve_training/final_loss": history[-1]["train_loss"] if history else math.nan,
                    "curve_training/epochs": len(history)})
    ctx.tracker.artifact([curve_file, ctx.out_dir / "curve.h5"], name="connect-curve", kind="curve")
    return summary


def run_eval(ctx: RunContext) -> dict[str, Any]:
    """task=connect_eval: re-evaluate a saved curve (``curve_file=``) on this config's dataset."""
    path = ctx.settings.curve_file
    if not path:
        raise UserError("task=connect_eval needs curve_file=<curve.pt written by task=connect>")
    data = load_curve_file(path)
    dataset = ctx.dataset()
    trained_on = (data.get("meta") or {}).get("dataset")
    if trained_on and trained_on != dataset.name:
        raise UserError(f"curve file {str(path)!r} was trained on dataset {trained_on!r}; evaluate it with dataset={trained_on}")
    base = model_from_checkpoint({"state_dict": data["end1"], "model_cfg": data["model_cfg"]}, f"curve file {str(path)!r}")
    check_model_fits_dataset(base, dataset, str(data["model_cfg"].get("name", "?")))
    curve = curve_from_file(data, base.to(ctx.device), f"curve file {str(path)!r}").to(ctx.device)
    meta = data.get("meta") or {}
    info = {"checkpoint1": meta.get("checkpoint1", "?"), "checkpoint2": meta.get("checkpoint2", "?"),
            "model_cfg": dict(data["model_cfg"]), "curve_file": str(Path(str(path)).resolve())}
    summary = _evaluate(ctx, curve, dataset, info)
    summary["curve_file"] = info["curve_file"]
    return summary


def _evaluate(ctx: RunContext, curve: C.CurveModel, dataset: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The curve and the segment evaluated (connect.report), logged to the tracker."""
    s, cs, precision = ctx.settings, ctx.settings.connect, ctx.precision
    splits, bn_data = curve_splits(dataset, s.eval.data_split, s.eval.split_idx, ctx.device, precision.channels_last)
    name = info.get("model_cfg", {}).get("name", "?")
    attrs = {"model": name, "dataset": dataset.name, "loss": s.eval.loss, "config": ctx.config,
             **{k: v for k, v in info.items() if k != "model_cfg"}}
    summary, results, figs = evaluate_and_report(
        curve, splits, bn_data, num_points=cs.num_points, loss=s.eval.loss, batch_size=ctx.eval_batch_size,
        bn_batch_size=cs.bn_batch_size, precision=precision, out_dir=ctx.out_dir, attrs=attrs, progress=ctx.progress,
        title=f"{curve.kind} curve vs segment: {name} on {dataset.name}" if s.plot.enabled else None)
    ts = np.linspace(0.0, 1.0, cs.num_points)
    ctx.tracker.log_curve("connect", ts, {f"{p}/{k}": v for p, m in results.items() for k, v in m.items()}, xname="t")
    ctx.tracker.log_images(figs, prefix="connect/")
    return summary
