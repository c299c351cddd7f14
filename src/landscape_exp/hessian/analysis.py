"""Hessian analysis of a model at a point: the glue between models/data and the spectral math.

:mod:`landscape_exp.hessian.operators` gives ``v -> H v`` for chosen parameters and :mod:`landscape_exp.hessian.spectral`
the algorithms on top of it.  This module

* selects the parameters the Hessian is taken with respect to, honouring ``ignore=biasbn``
  (every parameter of at most one dimension - biases and BatchNorm weights - is held fixed, as
  in the original tool's ``plot_hessian_eigen.py``), and builds the operator over device data;
* computes a :class:`SpectrumReport` (top-k and bottom-k eigenpairs, Hutchinson trace with its
  standard error, SLQ spectral density) and, per grid point, ``lambda_max``/``lambda_min``;
* turns flat eigenvectors into direction tensors in ``model.parameters()`` order with zeros on
  the ignored tensors (the original tool's direction-file layout), and back;
* evaluates the loss along eigenvectors.

Everything runs in full fp32 (TF32 off on CUDA, no autocast): curvature from reduced precision
is mostly noise.  Spectral vectors are float64 on the model's device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_exp.config.choices import CURVATURES, LOSSES
from landscape_exp.config.hessian import SpectrumSettings
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.evaluation import evaluate, mean_loss_fn, summed_loss_per_sample
from landscape_exp.errors import UserError, choice_error
from landscape_exp.hessian import density, spectral
from landscape_exp.hessian.operators import FisherOperator, GaussNewtonOperator, HessianOperator
from landscape_exp.hessian.report import FP32, eigen_ratio, fp32, seeded_generator, spectrum_report, timed_stage
from landscape_exp.weights.params import ParamSelection, vector_to_direction
from landscape_exp.weights.space import WeightSpace


def sample_subset(n: int, num_samples: int | None, seed: int) -> Tensor:
    """Sorted indices of a seeded subset of ``num_samples`` out of ``n`` (all of them for ``None``)."""
    if num_samples is None:
        return torch.arange(n)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= n:
        raise UserError(f"hessian.num_samples={num_samples!r} must be null (all) or an integer in 1..{n} (the split's size)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:num_samples].sort().values


def make_operator(model: nn.Module, selection: ParamSelection, data: DeviceData, *, loss: str = "crossentropy",
                  batch_size: int = 256, curvature: str = "hessian", params: Sequence[nn.Parameter] | None = None
                  ) -> HessianOperator:
    """The curvature of the mean ``loss`` over all of ``data`` w.r.t. the selected parameters:
    the Hessian, the generalized Gauss-Newton matrix (``ggn``) or the empirical Fisher (``fisher``).

    ``params`` (a subset of the selection's) restricts the operator to a diagonal block.  The
    model must be in eval mode (BatchNorm with running statistics: the Hessian of a fixed
    function, independent of the batching)."""
    if loss not in LOSSES:
        raise choice_error("loss", loss, LOSSES)
    if curvature not in CURVATURES:
        raise choice_error("hessian.curvature", curvature, CURVATURES)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"hessian.batch_size={batch_size!r} must be a positive integer")
    args = (model, list(params if params is not None else selection.params), lambda: data.batches(batch_size),
            mean_loss_fn(loss), len(data))
    if curvature == "ggn":
        return GaussNewtonOperator(*args)
    if curvature == "fisher":
        return FisherOperator(*args, lambda logits, targets: summed_loss_per_sample(logits, targets, loss))
    return HessianOperator(*args)


def extreme_point(op: HessianOperator, *, method: str = "lanczos", tol: float = 1e-4, max_iter: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """``lambda_max``, ``lambda_min`` (shift trick), their ratio, HVPs used and seconds at the
    model's current weights: one point of a ``hessian_surface``; also the residuals of both
    pairs (``residual_max``, ``residual_min``) and ``converged`` (1.0 when both met ``tol``)."""
    n0, t0 = op.num_hvp, time.perf_counter()
    with fp32(op.device):
        top, bot = spectral.extreme_eigenvalues(op.matvec, op.dim, options=spectral.SolverOptions(method, tol, max_iter),
                                                min_method="shift", generator=seeded_generator(seed), device=op.device)
    lmax, lmin = float(top.values[0]), float(bot.values[0])
    return {"lambda_max": lmax, "lambda_min": lmin, "ratio": eigen_ratio(lmin, lmax),
            "num_hvp": float(op.num_hvp - n0), "seconds": time.perf_counter() - t0,
            "residual_max": float(top.residuals[0]), "residual_min": float(bot.residuals[0]),
            "converged": float(top.all_converged and bot.all_converged)}


class ConvergenceWatch:
    """A surface measure whose points come from :func:`extreme_point`, seen through: it counts
    the points computed here whose ``lambda_max`` or ``lambda_min`` missed the tolerance (the
    surface file keeps its layout; the count goes to the job's output and summary)."""

    def __init__(self, measure: Any) -> None:
        self.measure = measure
        self.computed = 0
        self.unconverged: list[int] = []
        self.max_relative = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.measure, name)

    def points(self, space: Any, grid: Any, pending: list[int]) -> Iterator[tuple[int, dict[str, float]]]:
        for k, values in self.measure.points(space, grid, pending):
            self.computed += 1
            if not values.get("converged", 1.0):
                self.unconverged.append(int(k))
            lmax = abs(values["lambda_max"]) or math.nan
            self.max_relative = max(self.max_relative, values.get("residual_max", 0.0) / lmax,
                                    values.get("residual_min", 0.0) / lmax)
            yield k, values

    def line(self) -> str:
        if not self.unconverged:
            return (f"all {self.computed} points computed here converged (largest residual "
                    f"{self.max_relative:.2g} lambda_max)")
        return (f"WARNING: at {len(self.unconverged)} of the {self.computed} points computed here lambda_max or "
                f"lambda_min did NOT converge (flat indices {self.unconverged[:10]}; largest residual "
                f"{self.max_relative:.2g} lambda_max): raise hessian.max_iter")

    def summary(self) -> dict[str, Any]:
        return {"converged": not self.unconverged, "unconverged_points": self.unconverged,
                "max_residual_relative": self.max_relative}


def trajectory_point(op: HessianOperator, settings: SpectrumSettings) -> dict[str, Any]:
    """One epoch of a ``hessian_trajectory`` (a row of ``hessian_trajectory.h5`` but for the
    epoch and checkpoint): the top-k eigenpairs with residuals and converged flags, the fraction
    of the full-data gradient in their span, the Hutchinson trace (``trace_probes >= 2``), the
    SLQ density's bulk edge and outlier count (``density_probes >= 1``; else NaN and -1), the
    loss, HVPs and seconds."""
    num_hvp: dict[str, int] = {}
    seconds: dict[str, float] = {}
    report = spectrum_report(op, replace(settings, bottom=False, blocks=0))
    with fp32(op.device), timed_stage(op, "gradient", num_hvp, seconds):
        grad = op.gradient().double().cpu()
        loss = op.loss()
    top, bulk = report.top, report.bulk
    return {"lambda_max": report.lambda_max, "trace": report.trace, "trace_stderr": report.trace_stderr, "loss": loss,
            "num_hvp": report.num_hvp["total"] + num_hvp["gradient"],
            "seconds": report.seconds["total"] + seconds["gradient"], "grad_norm": float(grad.norm()),
            "gradient_top_fraction": density.fraction_in_subspace(grad, top.vectors.double()),
            "bulk_edge": bulk.edge if bulk else math.nan, "num_outliers": bulk.num_outliers if bulk else -1,
            "top_eigenvalues": top.values, "top_residuals": top.residuals, "top_converged": top.converged,
            "top_eigenvectors": top.vectors}


def curve_half_width(lambda_max: float, rise: float = 2.0) -> float:
    """Half-width ``a`` where the quadratic model ``lambda_max a^2 / 2`` rises by ``rise``:
    ``sqrt(2 rise / lambda_max)`` (1 when ``lambda_max <= 0``). Eigenvectors are unit vectors,
    so ``a`` is a distance in weight space."""
    return math.sqrt(2.0 * rise / lambda_max) if lambda_max > 0 and math.isfinite(lambda_max) else 1.0


@torch.no_grad()
def loss_along(model: nn.Module, selection: ParamSelection, vectors: Tensor, alphas: Sequence[float], data: DeviceData,
               *, loss: str = "crossentropy", batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Loss and accuracy (%) of ``model`` moved to ``theta + a v`` for every row ``v`` of
    ``vectors`` (flat, over the selected parameters) and every ``a`` in ``alphas``, in fp32.

    Returns two ``(len(vectors), len(alphas))`` arrays; the model is restored afterwards."""
    dirs = [vector_to_direction(v, model, selection) for v in vectors]
    space = WeightSpace(model, "weights", dirs)
    losses = np.empty((len(dirs), len(alphas)))
    accs = np.empty_like(losses)
    try:
        for i in range(len(dirs)):
            for j, a in enumerate(alphas):
                coeffs = [0.0] * len(dirs)
                coeffs[i] = float(a)
                space.move_to(coeffs)
                losses[i, j], accs[i, j] = evaluate(model, data, loss=loss, batch_size=batch_size, precision=FP32)
    finally:
        space.restore()
    return losses, accs
