"""Evaluating a mode-connectivity curve (Garipov et al. 2018; Draxler et al. 2018) and the straight
segment between its end points, storing both in ``curve.h5`` and drawing them on one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape_exp import curves as C
from landscape_exp.context import RunContext
from landscape_exp.data import DeviceData, ImageDataset, eval_subset
from landscape_exp.figures import figure_curves, save
from landscape_exp.path_metrics import barrier_annotation, path_measures
from landscape_exp.precision import Precision
from landscape_exp.provenance import versions
from landscape_exp.storage import atomic_path, decode_attrs, h5_attr, open_h5

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def curve_splits(ctx: RunContext, dataset: ImageDataset, precision: Precision) -> tuple[dict[str, DeviceData], DeviceData]:
    """Evaluated splits (train, honouring eval.data_split/split_idx, and test) and the full
    training split for the BatchNorm statistics, all resident on the device."""
    ev = ctx.settings.eval
    train_eval = eval_subset(dataset.train, ev.data_split, ev.split_idx)
    cl = precision.channels_last
    splits = {"train": DeviceData(train_eval, dataset.mean, dataset.std, ctx.device, channels_last=cl),
              "test": DeviceData(dataset.test, dataset.mean, dataset.std, ctx.device, channels_last=cl)}
    bn_data = splits["train"] if train_eval is dataset.train else DeviceData(dataset.train, dataset.mean, dataset.std, ctx.device, channels_last=cl)
    return splits, bn_data


def write_curve_h5(path: Path, ts: np.ndarray, results: dict[str, dict[str, np.ndarray]], attrs: dict[str, Any]) -> Path:
    """``curve.h5``: ``t`` and one group per path (the curve's kind, ``segment``) holding
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (accuracy in percent); atomic."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["t"] = ts
        for name, metrics in results.items():
            g = f.create_group(name)
            for k, v in metrics.items():
                g[k] = v
        for k, v in attrs.items():
            f.attrs[k] = h5_attr(v)
    return path


def read_curve_h5(path: str | Path) -> dict[str, Any]:
    """``{"t": (n,), "<path name>": {metric: (n,)}, "attrs": {...}}`` from a ``curve.h5``."""
    out: dict[str, Any] = {}
    with open_h5(path, "curve results file") as f:
        out["t"] = np.asarray(f["t"][()])
        for name in f:
            if isinstance(f[name], h5py.Group):
                out[name] = {k: np.asarray(f[name][k][()]) for k in f[name]}
        out["attrs"] = decode_attrs(f.attrs)
    return out


def evaluate_and_report(ctx: RunContext, curve: C.CurveModel, dataset: ImageDataset, info: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``curve`` and the segment between its end points, write ``curve.h5`` and the
    figure, and return the summary."""
    s, cs = ctx.settings, ctx.settings.connect
    assert cs is not None
    ts = np.linspace(0.0, 1.0, cs.num_points)
    precision = ctx.precision
    if precision.channels_last:
        curve.base.to(memory_format=torch.channels_last)
    splits, bn_data = curve_splits(ctx, dataset, precision)
    bs = ctx.eval_batch_size
    results: dict[str, dict[str, np.ndarray]] = {}
    for name in (curve.kind, "segment"):
        print(f"evaluating the {name} at {cs.num_points} points (BatchNorm statistics recomputed at each: {C.has_batchnorm(curve.base)})")
        results[name] = C.evaluate_path(curve, ts, bn_data, splits, kind=name, loss=s.eval.loss, batch_size=bs,
                                        bn_batch_size=cs.bn_batch_size or bs, precision=precision, progress=ctx.progress)
    model_name = info.get("model_cfg", {}).get("name", "?")
    # Connectivity measures (path_metrics): the curve's under their plain names, the segment's prefixed.
    measures = {}
    for name, m in results.items():
        measures.update(path_measures(ts, m, prefix="" if name == curve.kind else f"{name}_"))
    attrs = {"curve": curve.kind, "model": model_name, "dataset": dataset.name, "loss": s.eval.loss,
             "bn_recomputed": "true", "measures": measures, "config": ctx.config, "versions": versions(),
             **{k: v for k, v in info.items() if k != "model_cfg"}}
    h5 = write_curve_h5(ctx.out_dir / "curve.h5", ts, results, attrs)

    summary: dict[str, Any] = {"curve": curve.kind, "num_points": cs.num_points, "curve_h5": str(h5), "measures": measures}
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
    c, sg = summary[f"{curve.kind}/train_loss/max"], summary["segment/train_loss/max"]
    print(f"max train loss: {curve.kind} {c:.4g}, segment {sg:.4g}; end points {summary['end1/train_loss']:.4g} and {summary['end2/train_loss']:.4g}")
    print(f"train-loss barrier: {curve.kind} {measures['barrier_train_loss']['value']:.4g}, segment "
          f"{measures['segment_barrier_train_loss']['value']:.4g}; mode connectivity mc (Yang et al.) "
          f"{measures['mc_train_loss']['value']:.4g}")
    ctx.tracker.log_curve("connect", ts, {f"{name}/{k}": v for name, m in results.items() for k, v in m.items()}, xname="t")
    if s.plot.enabled:
        title = f"{curve.kind} curve vs segment: {model_name} on {dataset.name}"
        barriers = {name: barrier_annotation(ts, m["train_loss"]) for name, m in results.items() if "train_loss" in m}
        figs = save(figure_curves(ts, results, title=title, barriers=barriers), ctx.out_dir / "connect_curves")
        ctx.tracker.log_images(figs, prefix="connect/")
        summary["figures"] = [str(f) for f in figs]
    return summary
