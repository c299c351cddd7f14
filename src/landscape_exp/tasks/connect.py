"""task=connect / connect_eval: mode connectivity (Garipov et al. 2018; Draxler et al. 2018).

``connect`` trains a one-bend curve (quadratic Bezier or polygonal chain) between two trained
checkpoints, saves it as ``curve.pt``, evaluates train and test loss and accuracy at
``connect.num_points`` values of t along the curve and along the straight segment (BatchNorm
statistics recomputed on the training data at every t), writes ``curve.h5`` and draws both on one
figure (``connect_curves.png/.pdf``). ``connect_eval curve_file=<curve.pt>`` re-evaluates a saved
curve without training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape_exp import curves as C
from landscape_exp.checkpoint import check_state_dict, load_checkpoint, model_from_checkpoint
from landscape_exp.data import DeviceData, ImageDataset, eval_subset
from landscape_exp.errors import UserError, choice_error
from landscape_exp.plotting import plot_curves
from landscape_exp.precision import Precision
from landscape_exp.tasks.common import (
    RunContext,
    check_model_fits_dataset,
    dataset_for,
    dataset_identity,
    ensure_checkpoint,
    eval_batch_size,
    file_sha256,
    load_for_analysis,
    precision_for,
    versions,
)

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _connect_cfg(ctx: RunContext) -> Any:
    node = ctx.cfg.get("connect")
    if node is None:
        raise UserError("the config has no 'connect' section; select the task with task=connect or task=connect_eval")
    return node


def num_points(ctx: RunContext) -> int:
    n = int(_connect_cfg(ctx).get("num_points", 21))
    if n < 2:
        raise UserError(f"connect.num_points={n} must be >= 2 (the curve is evaluated at t = 0, ..., 1)")
    return n


def curve_splits(ctx: RunContext, dataset: ImageDataset, precision: Precision) -> tuple[dict[str, DeviceData], DeviceData]:
    """Evaluated splits (train, honouring eval.data_split/split_idx, and test) and the full
    training split for the BatchNorm statistics, all resident on the device."""
    train_eval = eval_subset(dataset.train, int(ctx.cfg.eval.data_split), int(ctx.cfg.eval.split_idx))
    cl = precision.channels_last
    splits = {"train": DeviceData(train_eval, dataset.mean, dataset.std, ctx.device, channels_last=cl),
              "test": DeviceData(dataset.test, dataset.mean, dataset.std, ctx.device, channels_last=cl)}
    bn_data = splits["train"] if train_eval is dataset.train else DeviceData(dataset.train, dataset.mean, dataset.std, ctx.device, channels_last=cl)
    return splits, bn_data


def write_curve_h5(path: Path, ts: np.ndarray, results: dict[str, dict[str, np.ndarray]], attrs: dict[str, Any]) -> Path:
    """``curve.h5``: ``t`` and one group per path (the curve's kind, ``segment``) holding
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (accuracy in percent); atomic."""
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f["t"] = ts
        for name, metrics in results.items():
            g = f.create_group(name)
            for k, v in metrics.items():
                g[k] = v
        for k, v in attrs.items():
            f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v, default=str)
    tmp.replace(path)
    return path


def read_curve_h5(path: str | Path) -> dict[str, Any]:
    """``{"t": (n,), "<path name>": {metric: (n,)}, "attrs": {...}}`` from a ``curve.h5``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"curve results file {str(p)!r} does not exist")
    out: dict[str, Any] = {}
    with h5py.File(p, "r") as f:
        out["t"] = np.asarray(f["t"][()])
        for name in f:
            if isinstance(f[name], h5py.Group):
                out[name] = {k: np.asarray(f[name][k][()]) for k in f[name]}
        out["attrs"] = dict(f.attrs)
    return out


def evaluate_and_report(ctx: RunContext, curve: C.CurveModel, dataset: ImageDataset, info: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``curve`` and the segment between its end points, write ``curve.h5`` and the
    figure, and return the summary."""
    cfg = ctx.cfg
    n = num_points(ctx)
    ts = np.linspace(0.0, 1.0, n)
    precision = precision_for(ctx)
    if precision.channels_last:
        curve.base.to(memory_format=torch.channels_last)
    splits, bn_data = curve_splits(ctx, dataset, precision)
    bs = eval_batch_size(ctx)
    bn_bs = _connect_cfg(ctx).get("bn_batch_size")
    bn_bs = int(bn_bs) if bn_bs is not None else bs
    loss = str(cfg.eval.loss)
    results: dict[str, dict[str, np.ndarray]] = {}
    for name in (curve.kind, "segment"):
        print(f"evaluating the {name} at {n} points (BatchNorm statistics recomputed at each: {C.has_batchnorm(curve.base)})")
        results[name] = C.evaluate_path(curve, ts, bn_data, splits, kind=name, loss=loss, batch_size=bs,
                                        bn_batch_size=bn_bs, precision=precision, progress=ctx.progress)
    model_name = info.get("model_cfg", {}).get("name", "?")
    attrs = {"curve": curve.kind, "model": model_name, "dataset": dataset.name, "loss": loss,
             "bn_recomputed": "true", "config": ctx.container(cfg), "versions": versions(),
             **{k: v for k, v in info.items() if k != "model_cfg"}}
    h5 = write_curve_h5(ctx.out_dir / "curve.h5", ts, results, attrs)

    summary: dict[str, Any] = {"curve": curve.kind, "num_points": n, "curve_h5": str(h5)}
    for name, m in results.items():
        for key in ("train_loss", "test_loss"):
            summary[f"{name}/{key}/max"] = float(np.max(m[key]))
            summary[f"{name}/{key}/barrier"] = C.barrier(m[key], ts)
        for split in ("train", "test"):
            err = 100.0 - m[f"{split}_acc"]
            summary[f"{name}/{split}_err/max"] = float(np.max(err))
            summary[f"{name}/{split}_err/barrier"] = C.barrier(err, ts)
    seg = results["segment"]
    for end, i in (("end1", 0), ("end2", -1)):
        for key in METRICS:
            summary[f"{end}/{key}"] = float(seg[key][i])
    c, s = summary[f"{curve.kind}/train_loss/max"], summary["segment/train_loss/max"]
    print(f"max train loss: {curve.kind} {c:.4g}, segment {s:.4g}; end points {summary['end1/train_loss']:.4g} and {summary['end2/train_loss']:.4g}")
    ctx.tracker.log_curve("connect", ts, {f"{name}/{k}": v for name, m in results.items() for k, v in m.items()}, xname="t")
    if cfg.plot.enabled:
        title = f"{curve.kind} curve vs segment: {model_name} on {dataset.name}"
        figs = plot_curves(ts, results, ctx.out_dir / "connect_curves", title=title)
        ctx.tracker.log_images(figs, prefix="connect/")
        summary["figures"] = [str(f) for f in figs]
    return summary


def run(ctx: RunContext) -> dict[str, Any]:
    """task=connect: train the curve, save it, evaluate it."""
    cfg = ctx.cfg
    cc = _connect_cfg(ctx)
    kind = str(cc.get("curve", "bezier"))
    if kind not in C.CURVES:
        raise choice_error("connect.curve", kind, C.CURVES)
    num_points(ctx)  # fail on a bad value before any training
    dataset = dataset_for(ctx)
    p1 = ensure_checkpoint(ctx)
    given = cc.get("model2")
    p2 = ensure_checkpoint(ctx, seed_offset=1, explicit=str(given) if given else None)
    if p1.resolve() == p2.resolve():
        raise UserError(f"both end points are {str(p1)!r}; give connect.model2 another checkpoint")
    model1, ck1 = load_for_analysis(ctx, p1, dataset)
    ck2 = load_checkpoint(p2)
    cfg1 = ck1.get("model_cfg") or ctx.container(cfg.model)
    cfg2 = ck2.get("model_cfg")
    if cfg2 is not None and dict(cfg2) != dict(cfg1):
        raise UserError(f"connect.model2 {str(p2)!r} is a {cfg2.get('name', '?')!r} model with another config than "
                        f"checkpoint {str(p1)!r} ({cfg1.get('name', '?')!r}); both end points need one architecture")
    check_state_dict(model1, ck2["state_dict"], f"connect.model2 {str(p2)!r}")
    names = [n for n, _ in model1.named_parameters()]
    w1 = [p.detach() for p in model1.parameters()]
    w2 = [ck2["state_dict"][n] for n in names]
    curve = C.CurveModel(model1, w1, w2, kind).to(ctx.device)

    settings = {k: _num(cc, k, d) for k, d in (("epochs", 20), ("lr", 0.05), ("momentum", 0.9), ("weight_decay", 0.0), ("batch_size", 64))}
    schedule = str(cc.get("schedule", "garipov"))
    loss = str(cfg.eval.loss)
    identity = {"end1_sha256": file_sha256(p1), "end2_sha256": file_sha256(p2), "curve": kind, **settings,
                "schedule": schedule, "seed": int(cfg.seed), "loss": loss, "dataset": dataset_identity(ctx)}
    train_data = DeviceData(dataset.train, dataset.mean, dataset.std, ctx.device)
    print(f"connect: training a {kind} curve between {p1} and {p2} for {int(settings['epochs'])} epochs")
    history = C.train_curve(
        curve, train_data, epochs=int(settings["epochs"]), lr=float(settings["lr"]), batch_size=int(settings["batch_size"]),
        momentum=float(settings["momentum"]), weight_decay=float(settings["weight_decay"]), schedule=schedule,
        loss=loss, seed=int(cfg.seed), augment=dataset_identity(ctx).get("augment"),
        state_path=ctx.out_dir / "curve_training.pt", identity=identity, progress=ctx.progress,
        on_epoch=lambda m: ctx.tracker.log({f"curve/{k}": v for k, v in m.items()}),
    )
    info = {"checkpoint1": str(p1.resolve()), "checkpoint2": str(p2.resolve()), "model_cfg": cfg1,
            "curve_file": str((ctx.out_dir / "curve.pt").resolve())}
    curve_file = C.save_curve(ctx.out_dir / "curve.pt", curve, end1_state=ck1["state_dict"], end2_state=ck2["state_dict"],
                              model_cfg=cfg1, meta={"dataset": dataset.name, "checkpoint1": info["checkpoint1"],
                                                    "checkpoint2": info["checkpoint2"], "training": identity, "history": history})
    summary = evaluate_and_report(ctx, curve, dataset, info)
    summary.update({"curve_file": str(curve_file), "checkpoint1": info["checkpoint1"], "checkpoint2": info["checkpoint2"],
                    "curve_training/final_loss": history[-1]["train_loss"] if history else math.nan,
                    "curve_training/epochs": len(history)})
    ctx.tracker.artifact([curve_file, ctx.out_dir / "curve.h5"], name="connect-curve", kind="curve")
    return summary


def run_eval(ctx: RunContext) -> dict[str, Any]:
    """task=connect_eval: re-evaluate a saved curve (``curve_file=``) on this config's dataset."""
    path = ctx.cfg.get("curve_file")
    if not path:
        raise UserError("task=connect_eval needs curve_file=<curve.pt written by task=connect>")
    num_points(ctx)
    data = C.load_curve_file(path)
    dataset = dataset_for(ctx)
    trained_on = (data.get("meta") or {}).get("dataset")
    if trained_on and trained_on != dataset.name:
        raise UserError(f"curve file {str(path)!r} was trained on dataset {trained_on!r}; evaluate it with dataset={trained_on}")
    base = model_from_checkpoint({"state_dict": data["end1"], "model_cfg": data["model_cfg"]}, f"curve file {str(path)!r}")
    check_model_fits_dataset(base, dataset, str(data["model_cfg"].get("name", "?")))
    curve = C.curve_from_file(data, base.to(ctx.device), f"curve file {str(path)!r}").to(ctx.device)
    meta = data.get("meta") or {}
    info = {"checkpoint1": meta.get("checkpoint1", "?"), "checkpoint2": meta.get("checkpoint2", "?"),
            "model_cfg": dict(data["model_cfg"]), "curve_file": str(Path(str(path)).resolve())}
    summary = evaluate_and_report(ctx, curve, dataset, info)
    summary["curve_file"] = info["curve_file"]
    return summary


def _num(node: Any, key: str, default: float) -> float:
    v = node.get(key, default)
    try:
        out = float(v)
    except (TypeError, ValueError):
        raise UserError(f"connect.{key}={v!r} must be a number") from None
    if not math.isfinite(out):
        raise UserError(f"connect.{key}={v!r} must be finite")
    return out
