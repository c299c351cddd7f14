"""Hessian analysis of a model at a point: the glue between models/data and the spectral math.

:mod:`landscape_exp.hvp` gives ``v -> H v`` for chosen parameters and :mod:`landscape_exp.spectral`
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

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_exp import spectral
from landscape_exp.data import DeviceData
from landscape_exp.directions import Direction, check_ignore
from landscape_exp.errors import UserError, choice_error
from landscape_exp.evaluation import LOSSES, evaluate, mean_loss_fn
from landscape_exp.hvp import HessianOperator
from landscape_exp.precision import Precision, precision_context
from landscape_exp.surface.weight_space import WeightSpace

FP32 = Precision("fp32")


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamSelection:
    """The parameters the Hessian acts on, with where they sit in ``model.parameters()``."""

    indices: tuple[int, ...]  # positions in model.parameters()
    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    num_tensors: int  # len(list(model.parameters()))

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.params)


def select_parameters(model: nn.Module, ignore: str | None) -> ParamSelection:
    """The trainable parameters of ``model``, without the 1-D ones when ``ignore='biasbn'``.

    ``ignore`` is ``'biasbn'`` or ``None``/``'none'`` (every trainable parameter).
    """
    ignore = check_ignore(ignore)
    named = list(model.named_parameters())
    keep = [i for i, (_, p) in enumerate(named) if p.requires_grad and not (ignore and p.dim() <= 1)]
    if not keep:
        raise UserError(f"the model has no {'multi-dimensional ' if ignore else ''}trainable parameters to take "
                        f"the Hessian with respect to (ignore={ignore or 'none'}); try direction.ignore=none")
    return ParamSelection(tuple(keep), tuple(named[i][0] for i in keep), tuple(named[i][1] for i in keep), len(named))


def vector_to_direction(vec: Tensor, model: nn.Module, selection: ParamSelection) -> Direction:
    """A flat vector over the selected parameters as a full direction: one tensor per
    ``model.parameters()`` entry (the parameter's shape, dtype and device), zeros elsewhere."""
    params = list(model.parameters())
    if len(params) != selection.num_tensors:
        raise UserError(f"the selection is for a model with {selection.num_tensors} parameter tensors, this one has {len(params)}")
    if vec.dim() != 1 or vec.numel() != selection.dim:
        raise UserError(f"eigenvector has shape {tuple(vec.shape)}; the selected parameters hold {selection.dim} numbers")
    out = [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in params]
    offset = 0
    for i in selection.indices:
        n = params[i].numel()
        out[i] = vec[offset:offset + n].detach().reshape(params[i].shape).to(device=params[i].device, dtype=params[i].dtype)
        offset += n
    return out


def direction_to_vector(direction: Sequence[Tensor], selection: ParamSelection) -> Tensor:
    """The selected tensors of a full direction concatenated into one flat vector."""
    if len(direction) != selection.num_tensors:
        raise UserError(f"direction has {len(direction)} tensors; the model has {selection.num_tensors}")
    return torch.cat([direction[i].reshape(-1) for i in selection.indices])


def sample_subset(n: int, num_samples: int | None, seed: int) -> Tensor:
    """Sorted indices of a seeded subset of ``num_samples`` out of ``n`` (all of them for ``None``)."""
    if num_samples is None:
        return torch.arange(n)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= n:
        raise UserError(f"hessian.num_samples={num_samples!r} must be null (all) or an integer in 1..{n} (the split's size)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:num_samples].sort().values


def make_operator(model: nn.Module, selection: ParamSelection, data: DeviceData, *, loss: str = "crossentropy",
                  batch_size: int = 256) -> HessianOperator:
    """The Hessian of the mean ``loss`` over all of ``data`` w.r.t. the selected parameters.

    The model must be in eval mode (BatchNorm with running statistics: the Hessian of a fixed
    function, independent of the batching)."""
    if loss not in LOSSES:
        raise choice_error("loss", loss, LOSSES)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"hessian.batch_size={batch_size!r} must be a positive integer")
    return HessianOperator(model, list(selection.params), lambda: data.batches(batch_size), mean_loss_fn(loss), len(data))


@contextlib.contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Full fp32: TF32 off for matmuls and cuDNN convolutions (restored afterwards), no autocast."""
    with precision_context(FP32, device):
        yield


# ----------------------------------------------------------------------------- spectra


@dataclass(frozen=True)
class SpectrumSettings:
    """What :func:`spectrum_report` computes and how hard it tries.

    ``tol`` is the relative residual ``||H v - lambda v|| <= tol |lambda|`` of the Lanczos and
    power methods (ARPACK's relative accuracy for ``eigsh``); ``max_iter`` caps Lanczos steps
    (default ``min(dim, 300)``), power iterations per pair (1000) or ARPACK restarts.
    ``trace_probes=0`` skips the trace, ``density_probes=0`` the density.
    """

    k: int = 5
    method: str = "lanczos"
    tol: float = 1e-4
    max_iter: int | None = None
    trace_probes: int = 50
    density_probes: int = 3
    density_iters: int = 80
    density_points: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        def pos_int(name: str, v: object, zero_ok: bool = False) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
                raise UserError(f"hessian.{name}={v!r} must be an integer >= {0 if zero_ok else 1}")

        pos_int("k", self.k)
        if self.method not in spectral.METHODS:
            raise choice_error("hessian.method", self.method, spectral.METHODS)
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0 < self.tol < 1:
            raise UserError(f"hessian.tol={self.tol!r} must be a number in (0, 1), e.g. 1e-4")
        if self.max_iter is not None:
            pos_int("max_iter", self.max_iter)
        pos_int("trace_probes", self.trace_probes, zero_ok=True)
        if self.trace_probes == 1:
            raise UserError("hessian.trace_probes=1 gives no standard error; use 0 (no trace) or >= 2")
        pos_int("density.probes", self.density_probes, zero_ok=True)
        pos_int("density.iters", self.density_iters)
        pos_int("density.num_points", self.density_points)
        if self.density_points < 2:
            raise UserError(f"hessian.density.num_points={self.density_points} must be >= 2")
        pos_int("seed", self.seed, zero_ok=True)


@dataclass
class SpectrumReport:
    """Eigenpairs, trace and density of one Hessian (values float64 numpy, vectors float32 CPU)."""

    top_values: np.ndarray  # (k,) descending
    top_vectors: Tensor  # (k, dim) unit rows
    bottom_values: np.ndarray  # (k,) ascending (the most negative first)
    bottom_vectors: Tensor
    trace: float = math.nan
    trace_stderr: float = math.nan
    trace_samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    density_grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    density: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slq_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slq_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    num_hvp: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        return float(self.top_values[0])

    @property
    def lambda_min(self) -> float:
        return float(self.bottom_values[0])

    @property
    def ratio(self) -> float:
        return eigen_ratio(self.lambda_min, self.lambda_max)


def eigen_ratio(lambda_min: float, lambda_max: float) -> float:
    """``|lambda_min / lambda_max|`` (Li et al. 2018, section 6); NaN when ``lambda_max`` is 0."""
    return abs(lambda_min / lambda_max) if lambda_max != 0 else math.nan


def canonical_sign(vecs: Tensor) -> Tensor:
    """Rows flipped so each row's entry of largest magnitude is positive (eigenvectors have an
    arbitrary sign; this makes saved directions reproducible)."""
    if vecs.numel() == 0:
        return vecs
    idx = vecs.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vecs.gather(1, idx))
    return vecs * torch.where(signs == 0, torch.ones_like(signs), signs)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def bottom_eigenpairs(matvec: spectral.MatVec, dim: int, k: int, lambda_max: float, *, method: str = "lanczos",
                      tol: float = 1e-4, max_iter: int | None = None, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest eigenpairs of ``H`` (ascending), found on ``H - lambda_max I``.

    The shift leaves eigenvectors unchanged and makes every eigenvalue ``<= 0``, so the wanted
    ones are the largest in magnitude: power iteration then converges to them, and the relative
    stopping tests (``tol * |theta|``) refer to the spread of the spectrum instead of to the
    eigenvalue itself, which is near zero for a trained network and would otherwise never be met.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")

    def shifted(v: Tensor) -> Tensor:
        return matvec(v).to(device=dev, dtype=torch.float64) - lambda_max * v.to(device=dev, dtype=torch.float64)

    vals, vecs = spectral.top_eigenpairs(shifted, dim, k, which="SA", method=method, tol=tol, max_iter=max_iter,
                                         generator=generator, device=dev)
    return vals + lambda_max, vecs


def spectrum_report(op: HessianOperator, settings: SpectrumSettings) -> SpectrumReport:
    """Top-k and bottom-k eigenpairs, Hutchinson trace and SLQ density of ``op``'s Hessian.

    Each stage draws from its own generator (seeds ``seed``, ``seed+1``, ... ), so changing ``k``
    does not change the trace probes.  HVP counts and wall times are recorded per stage.
    """
    s, dim, dev = settings, op.dim, op.device
    if s.k > dim:
        raise UserError(f"hessian.k={s.k} exceeds the number of parameters the Hessian acts on ({dim})")
    num_hvp: dict[str, int] = {}
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        n0, t0 = op.num_hvp, time.perf_counter()
        yield
        _sync(dev)
        num_hvp[name], seconds[name] = op.num_hvp - n0, time.perf_counter() - t0

    kw = dict(method=s.method, tol=s.tol, max_iter=s.max_iter, device=dev)
    with fp32(dev):
        with stage("top"):
            top_vals, top_vecs = spectral.top_eigenpairs(op.matvec, dim, s.k, which="LA", generator=_generator(s.seed), **kw)
        with stage("bottom"):
            bot_vals, bot_vecs = bottom_eigenpairs(op.matvec, dim, s.k, float(top_vals[0]), generator=_generator(s.seed + 1), **kw)
        report = SpectrumReport(
            top_vals.double().numpy(), canonical_sign(top_vecs).float().cpu(),
            bot_vals.double().numpy(), canonical_sign(bot_vecs).float().cpu(),
        )
        if s.trace_probes:
            with stage("trace"):
                tr, se, samples = spectral.hutchinson_trace(op.matvec, dim, s.trace_probes,
                                                            generator=_generator(s.seed + 2), device=dev)
            report.trace, report.trace_stderr, report.trace_samples = tr, se, samples.numpy()
        if s.density_probes:
            with stage("density"):
                grid, dens, nodes, weights = spectral.slq_density(
                    op.matvec, dim, num_probes=s.density_probes, num_iters=min(s.density_iters, dim),
                    num_points=s.density_points, generator=_generator(s.seed + 3), device=dev)
            report.density_grid, report.density = grid.numpy(), dens.numpy()
            report.slq_nodes, report.slq_weights = nodes.numpy(), weights.numpy()
    report.num_hvp = {**num_hvp, "total": sum(num_hvp.values())}
    report.seconds = {**seconds, "total": sum(seconds.values())}
    return report


def extreme_point(op: HessianOperator, *, method: str = "lanczos", tol: float = 1e-4, max_iter: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """``lambda_max``, ``lambda_min`` (shift trick), their ratio, HVPs used and seconds at the
    model's current weights: one point of a ``hessian_surface``."""
    n0, t0 = op.num_hvp, time.perf_counter()
    with fp32(op.device):
        lmax, lmin = spectral.extreme_eigenvalues(op.matvec, op.dim, method=method, min_method="shift", tol=tol,
                                                  max_iter=max_iter, generator=_generator(seed), device=op.device)
    return {"lambda_max": lmax, "lambda_min": lmin, "ratio": eigen_ratio(lmin, lmax),
            "num_hvp": float(op.num_hvp - n0), "seconds": time.perf_counter() - t0}


def top_and_trace(op: HessianOperator, *, k: int = 1, method: str = "lanczos", tol: float = 1e-4,
                  max_iter: int | None = None, trace_probes: int = 0, seed: int = 0) -> dict[str, Any]:
    """Top-k eigenvalues and (``trace_probes >= 2``) the Hutchinson trace: one epoch of a
    ``hessian_trajectory``."""
    n0, t0 = op.num_hvp, time.perf_counter()
    out: dict[str, Any] = {"trace": math.nan, "trace_stderr": math.nan}
    with fp32(op.device):
        vals, _ = spectral.top_eigenpairs(op.matvec, op.dim, k, which="LA", method=method, tol=tol, max_iter=max_iter,
                                          generator=_generator(seed), device=op.device)
        out["top_eigenvalues"] = vals.double().numpy()
        if trace_probes:
            tr, se, _ = spectral.hutchinson_trace(op.matvec, op.dim, trace_probes, generator=_generator(seed + 2),
                                                  device=op.device)
            out["trace"], out["trace_stderr"] = tr, se
    _sync(op.device)
    out.update(num_hvp=op.num_hvp - n0, seconds=time.perf_counter() - t0)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
