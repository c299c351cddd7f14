"""The point loop of every surface: move the model to each pending grid point, measure it there,
record the values (durable before the next point starts), and put the model back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from tqdm import tqdm

from landscape_exp.surface.grid import Grid
from landscape_exp.surface.store import SurfaceFile
from landscape_exp.weights.space import WeightSpace


class PointMeasure(Protocol):
    """What is computed at each grid point (loss and accuracy, or Hessian extremes)."""

    metrics: list[str]  # the surface file's datasets, in order

    def fingerprint(self) -> dict[str, Any]:
        """What, besides the model, directions and grid, determines the values."""

    def attrs(self) -> dict[str, Any]:
        """Extra attributes of the surface file."""

    def points(self, space: WeightSpace, grid: Grid, pending: list[int]) -> Iterator[tuple[int, dict[str, float]]]:
        """Move ``space`` to each of the ``pending`` flat indices and yield ``(k, values)``."""


def compute_surface(space: WeightSpace, grid: Grid, store: SurfaceFile, measure: PointMeasure, *, progress: bool = True,
                    desc: str = "surface") -> dict[str, Any]:
    """Fill every pending point of ``store``; the weights are back at the origin afterwards."""
    pending = store.pending()
    t0 = time.perf_counter()
    bar = tqdm(total=len(store.indices), initial=store.num_done, desc=desc, unit="pt", disable=not progress,
               smoothing=0.1)
    try:
        for k, values in measure.points(space, grid, pending):
            store.record(k, values)
            bar.update(1)
    finally:
        bar.close()
        space.restore()
    elapsed = time.perf_counter() - t0
    return {"points_computed": len(pending), "seconds": elapsed,
            "points_per_second": len(pending) / elapsed if elapsed > 0 and pending else float("nan")}
