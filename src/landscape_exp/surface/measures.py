"""What a surface measures at each point: loss and accuracy on the evaluated splits, or the
extreme Hessian eigenvalues (both satisfy :class:`landscape_exp.surface.loop.PointMeasure`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from landscape_exp.data.device import DeviceData
from landscape_exp.engine.batchnorm import recompute_bn_stats, running_stats
from landscape_exp.engine.evaluation import evaluate_points_sums, evaluate_sums
from landscape_exp.engine.folding import EvalCopy, can_fuse, eval_forward
from landscape_exp.engine.memory import keep_freed_memory
from landscape_exp.engine.precision import Precision
from landscape_exp.errors import UserError
from landscape_exp.surface.grid import Grid
from landscape_exp.surface.store import metric_names
from landscape_exp.weights.space import WeightSpace


@dataclass
class LossMeasure:
    """Mean loss and accuracy (percent) on each split, from on-device sums (one host sync per
    point). ``points_per_pass > 1`` evaluates that many points per forward pass with ``vmap``
    over stacked weights (pays off for small models on a GPU; see benchmarks/).

    One point at a time, the forward runs on an evaluation copy of the model when
    ``precision.fold_bn`` finds BatchNorm layers to fold, a CPU has conv-ReLU pairs to fuse or the
    mode is bf16 (:func:`landscape_exp.engine.folding.eval_forward`): after each move of the model the
    copy is recomputed from it, once per point, and ``precision.compile`` compiles that copy
    (``forward`` is then not used). The moved model's own weights are never changed.
    """

    model: nn.Module
    splits: Mapping[str, DeviceData]
    loss: str
    batch_size: int
    precision: Precision
    data_split: tuple[int, int]
    points_per_pass: int = 1
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # e.g. a torch.compile'd model
    fuse: bool | None = None  # conv-ReLU fusion; None or True: where the kernels run (folding.can_fuse)
    bn_data: DeviceData | None = None  # eval.bn_recompute: BatchNorm statistics recomputed on it at every point
    bn_batch_size: int = 1024
    metrics: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = metric_names(list(self.splits))
        if self.bn_data is not None and self.points_per_pass > 1:
            raise UserError(f"eval.bn_recompute=true evaluates one point at a time; set eval.points_per_pass=1 "
                            f"(not {self.points_per_pass})")
        self._copy: EvalCopy | None = None
        self._run_precision = self.precision
        if any(d.device.type == "cpu" for d in self.splits.values()):
            keep_freed_memory()  # the same activation buffers every batch: no page faults for them
        if self.points_per_pass <= 1:
            p = self.precision
            device = next(self.model.parameters(), torch.empty(0)).device
            fuse = (self.fuse is None or self.fuse) and can_fuse(device, p.dtype)
            fwd, self._copy = eval_forward(self.model, fold=p.fold_bn, fuse=fuse, dtype=p.dtype,
                                           channels_last=p.channels_last, compile=p.compile)
            if self._copy is not None or self.forward is None:  # else: the caller's (compiled) model
                self.forward = fwd
            if self._copy is not None and self._copy.dtype is not None:
                # the copy and its inputs are bf16 already: no autocast on top (it costs ~7% on CPU)
                self._run_precision = replace(p, mode="fp32")

    @property
    def num_folded(self) -> int:
        """BatchNorm layers folded into the layer before them (0: evaluated as written)."""
        return self._copy.num_folded if self._copy is not None else 0

    @property
    def num_fused(self) -> int:
        """Convolutions run with their ReLU (and residual addition) fused in (CPU)."""
        return self._copy.num_fused if self._copy is not None else 0

    def fingerprint(self) -> dict[str, Any]:
        # bn_recompute only when on: files computed before the option existed still match
        return {"splits": list(self.splits), "data_split": list(self.data_split),
                "precision": self.precision.mode, **({"bn_recompute": True} if self.bn_data is not None else {})}

    def attrs(self) -> dict[str, Any]:
        notes = {"precision_notices": list(self.precision.notices)} if self.precision.notices else {}  # e.g. bf16 ran fp32
        return {"precision": self.precision.mode, **notes, **({"bn_recompute": "true"} if self.bn_data is not None else {})}

    def _values(self, sums: Mapping[str, tuple[Any, Any]]) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, (total, correct) in sums.items():
            n = len(self.splits[name])
            values[f"{name}_loss"] = float(total) / n  # the one host sync per point
            values[f"{name}_acc"] = 100.0 * float(correct) / n
        return values

    def points(self, space: WeightSpace, grid: Grid, pending: list[int]) -> Iterator[tuple[int, dict[str, float]]]:
        fwd = self.forward or self.model
        kw = dict(loss=self.loss, batch_size=self.batch_size, precision=self._run_precision)
        if self.points_per_pass <= 1:
            saved = {k: b.clone() for k, b in running_stats(self.model).items()} if self.bn_data is not None else {}
            try:
                for k in pending:
                    space.move_to(grid.point(k))
                    if self.bn_data is not None:  # before the refresh: the folded copy uses these statistics
                        recompute_bn_stats(self.model, self.bn_data, batch_size=self.bn_batch_size)
                    if self._copy is not None:
                        self._copy.refresh()
                    yield k, self._values({name: evaluate_sums(fwd, data, **kw) for name, data in self.splits.items()})
            finally:  # the origin's statistics back (weights-only directions do not restore them)
                with torch.no_grad():
                    for name, buf in running_stats(self.model).items():
                        if name in saved:
                            buf.copy_(saved[name])
            return
        for start in range(0, len(pending), self.points_per_pass):
            chunk = pending[start : start + self.points_per_pass]
            stacked = space.stacked_points(torch.tensor([grid.point(k) for k in chunk], dtype=torch.float64))
            sums = {name: evaluate_points_sums(self.model, stacked, data, **kw) for name, data in self.splits.items()}
            totals = {name: (t.cpu(), c.cpu()) for name, (t, c) in sums.items()}
            for i, k in enumerate(chunk):
                yield k, self._values({name: (t[i], c[i]) for name, (t, c) in totals.items()})


@dataclass
class HessianMeasure:
    """``lambda_max``, ``lambda_min`` (shift trick), ``|lambda_min/lambda_max|``, the loss, HVPs
    and seconds at each point (Li et al. 2018, section 6), in full fp32."""

    op: Any  # landscape_exp.hessian.operators.HessianOperator over the evaluated samples
    settings: Any  # landscape_exp.config.hessian.HessianSettings
    ignore: str | None
    num_samples: int
    dim: int
    metrics: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.loss_key = f"{self.settings.split}_loss"
        self.metrics = ["lambda_max", "lambda_min", "ratio", self.loss_key, "num_hvp", "seconds"]

    def fingerprint(self) -> dict[str, Any]:
        return {"ignore": self.ignore or "none", "hessian": self.settings.identity(), "precision": "fp32"}

    def attrs(self) -> dict[str, Any]:
        return {"precision": "fp32", "num_samples": self.num_samples, "dim": self.dim}

    def points(self, space: WeightSpace, grid: Grid, pending: list[int]) -> Iterator[tuple[int, dict[str, float]]]:
        from landscape_exp import hessian as H

        s = self.settings
        for k in pending:
            space.move_to(grid.point(k))
            # A seed per point: a resumed run gives the same values as an uninterrupted one.
            res = H.extreme_point(self.op, method=s.spectrum.method, tol=s.spectrum.tol, max_iter=s.spectrum.max_iter,
                                  seed=s.seed + k)
            with H.fp32(self.op.device):
                res[self.loss_key] = self.op.loss()
            yield k, res


def bn_recompute_data(model: nn.Module, dataset: Any, splits: Mapping[str, DeviceData], device: torch.device, *,
                      channels_last: bool = False, full_train: bool = True) -> DeviceData | None:
    """The training data BatchNorm statistics are recomputed on at every point (``eval.bn_recompute``):
    the evaluated training split when it is the whole split (``full_train``), else the whole split
    loaded again; None (said once) when ``model`` has no BatchNorm. Prints the cost."""
    from landscape_exp.engine.batchnorm import has_batchnorm

    if not has_batchnorm(model):
        print("eval.bn_recompute: the model has no BatchNorm layer; nothing to recompute")
        return None
    data = splits["train"] if full_train and "train" in splits else DeviceData(
        dataset.train, dataset.mean, dataset.std, device, channels_last=channels_last)
    evaluated = sum(len(d) for d in splits.values())
    print(f"eval.bn_recompute: BatchNorm statistics recomputed at every point: one extra forward pass over "
          f"{len(data):,} training images per point (about {(evaluated + len(data)) / evaluated:.2g}x the work per point)")
    return data
