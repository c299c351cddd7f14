"""Computing a loss surface: move the model to each pending grid point and evaluate it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from landscape_exp.data import DeviceData
from landscape_exp.evaluation import evaluate_points_sums, evaluate_sums
from landscape_exp.grid import Grid
from landscape_exp.precision import Precision
from landscape_exp.surface_file import SurfaceFile
from landscape_exp.weight_space import WeightSpace


def compute_surface(
    model: nn.Module,
    space: WeightSpace,
    grid: Grid,
    store: SurfaceFile,
    splits: Mapping[str, DeviceData],
    *,
    loss: str = "crossentropy",
    batch_size: int = 1024,
    precision: Precision = Precision(),
    progress: bool = True,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    points_per_pass: int = 1,
) -> dict[str, Any]:
    """Fill every pending point of ``store``; the model is left at the origin afterwards.

    ``forward`` replaces ``model`` for the forward pass (e.g. a ``torch.compile`` d version that
    shares its parameters). The model must be in eval mode (BatchNorm uses running statistics).
    ``points_per_pass > 1`` evaluates that many grid points per forward pass with ``vmap`` over
    stacked weights (pays off for small models on a GPU; see benchmarks/).
    """
    fwd = forward or model
    pending = store.pending()
    t0 = time.perf_counter()
    bar = tqdm(total=len(store.indices), initial=store.num_done, desc="surface", unit="pt",
               disable=not progress, smoothing=0.1)

    def record(k: int, sums: Mapping[str, tuple[Any, Any]]) -> None:
        values: dict[str, float] = {}
        for name, (total, correct) in sums.items():
            n = len(splits[name])
            values[f"{name}_loss"] = float(total) / n  # the one host sync per point
            values[f"{name}_acc"] = 100.0 * float(correct) / n
        store.record(k, values)
        bar.update(1)

    try:
        if points_per_pass <= 1:
            for k in pending:
                space.move_to(grid.point(k))
                record(k, {name: evaluate_sums(fwd, data, loss=loss, batch_size=batch_size, precision=precision)
                           for name, data in splits.items()})
        else:
            for start in range(0, len(pending), points_per_pass):
                chunk = pending[start : start + points_per_pass]
                coeffs = torch.tensor([grid.point(k) for k in chunk], dtype=torch.float64)
                stacked = space.stacked_points(coeffs)
                sums = {name: evaluate_points_sums(model, stacked, data, loss=loss, batch_size=batch_size,
                                                   precision=precision) for name, data in splits.items()}
                totals = {name: (t.cpu(), c.cpu()) for name, (t, c) in sums.items()}
                for i, k in enumerate(chunk):
                    record(k, {name: (t[i], c[i]) for name, (t, c) in totals.items()})
    finally:
        bar.close()
        space.restore()
    elapsed = time.perf_counter() - t0
    return {"points_computed": len(pending), "seconds": elapsed,
            "points_per_second": len(pending) / elapsed if elapsed > 0 and pending else float("nan")}
