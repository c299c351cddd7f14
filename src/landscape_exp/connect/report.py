"""Evaluating a mode-connectivity curve (Garipov et al. 2018; Draxler et al. 2018) and the straight
segment between its end points, storing both in ``curve.h5`` and drawing them on one figure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape_exp.config.choices import SPLIT_METRICS
from landscape_exp.connect import curves as C
from landscape_exp.data.datasets import ImageDataset, eval_subset
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.batchnorm import has_batchnorm
from landscape_exp.engine.precision import Precision
from landscape_exp.figures import figure_curves, save
from landscape_exp.io.files import atomic_path, h5_attr
from landscape_exp.io.provenance import versions
from landscape_exp.measures.paths import barrier_annotation, path_measures
from landscape_exp.measures.record import Measure, measures_json


def curve_splits(dataset: ImageDataset, data_split: int, split_idx: int, device: torch.device,
                 channels_last: bool) -> tuple[dict[str, DeviceData], DeviceData]:
    """Evaluated splits (train, as the ``data_split``/``split_idx`` subset, and test) and the full
    training split for the BatchNorm statistics, all resident on ``device``."""
    train_eval = eval_subset(dataset.train, data_split, split_idx)
    splits = {"train": DeviceData(train_eval, dataset.mean, dataset.std, device, channels_last=channels_last),
              "test": DeviceData(dataset.test, dataset.mean, dataset.std, device, channels_last=channels_last)}
    bn_data = splits["train"] if train_eval is dataset.train else DeviceData(
        dataset.train, dataset.mean, dataset.std, device, channels_last=channels_last)
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


def evaluate_and_report(curve: C.CurveModel, splits: Mapping[str, DeviceData], bn_data: DeviceData, *,
                        num_points: int, loss: str, batch_size: int, bn_batch_size: int | None, precision: Precision,
                        out_dir: Path, attrs: Mapping[str, Any], title: str | None, progress: bool = False,
                        ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], list[Path]]:
    """Evaluate ``curve`` and the segment between its end points at ``num_points`` values of t,
    write ``curve.h5`` (with ``attrs``) and, with a ``title``, the figure; returns the summary, the
    values per path and the figure files. BatchNorm statistics are recomputed on ``bn_data`` at
    every t."""
    ts = np.linspace(0.0, 1.0, num_points)
    if precision.channels_last:
        curve.base.to(memory_format=torch.channels_last)
    results: dict[str, dict[str, np.ndarray]] = {}
    for name in (curve.kind, "segment"):
        print(f"evaluating the {name} at {num_points} points (BatchNorm statistics recomputed at each: "
              f"{has_batchnorm(curve.base)})")
        results[name] = C.evaluate_path(curve, ts, bn_data, splits, kind=name, loss=loss, batch_size=batch_size,
                                        bn_batch_size=bn_batch_size or batch_size, precision=precision, progress=progress)
    # Connectivity measures (measures.paths): the curve's under their plain names, the segment's prefixed.
    measures: dict[str, Measure] = {}
    for name, m in results.items():
        measures.update(path_measures(ts, m, prefix="" if name == curve.kind else f"{name}_"))
    h5 = write_curve_h5(out_dir / "curve.h5", ts, results,
                        {"curve": curve.kind, "bn_recomputed": "true", "measures": measures_json(measures), **attrs,
                         "versions": versions()})
    summary: dict[str, Any] = {"curve": curve.kind, "num_points": num_points, "curve_h5": str(h5),
                               "measures": measures_json(measures)}
    seg = results["segment"]
    for end, i in (("end1", 0), ("end2", -1)):
        for key in SPLIT_METRICS:
            summary[f"{end}/{key}"] = float(seg[key][i])
    m = measures
    print(f"max train loss: {curve.kind} {m['curve_max_train_loss'].value:.4g}, segment "
          f"{m['segment_curve_max_train_loss'].value:.4g}; end points {summary['end1/train_loss']:.4g} and "
          f"{summary['end2/train_loss']:.4g}")
    print(f"train-loss barrier: {curve.kind} {m['barrier_train_loss'].value:.4g}, segment "
          f"{m['segment_barrier_train_loss'].value:.4g}; mode connectivity mc (Yang et al.) {m['mc_train_loss'].value:.4g}")
    figs: list[Path] = []
    if title is not None:
        barriers = {name: barrier_annotation(ts, r["train_loss"]) for name, r in results.items() if "train_loss" in r}
        figs = save(figure_curves(ts, results, title=title, barriers=barriers), out_dir / "connect_curves")
        summary["figures"] = [str(f) for f in figs]
    return summary, results, figs
