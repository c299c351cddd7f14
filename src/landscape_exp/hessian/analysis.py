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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_exp import spectral
from landscape_exp.console import duration
from landscape_exp.data import DeviceData
from landscape_exp.directions import Direction, check_ignore
from landscape_exp.errors import UserError, choice_error
from landscape_exp.evaluation import LOSSES, evaluate, mean_loss_fn, summed_loss_per_sample
from landscape_exp.hvp import CURVATURES, FisherOperator, GaussNewtonOperator, HessianOperator
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


@contextlib.contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Full fp32: TF32 off for matmuls and cuDNN convolutions (restored afterwards), no autocast."""
    with precision_context(FP32, device):
        yield


# ----------------------------------------------------------------------------- spectra


@dataclass(frozen=True)
class SpectrumSettings:
    """What :func:`spectrum_report` computes and how hard it tries.

    ``tol``: a pair has converged when ``||H v - lambda v|| <= tol * ||H||`` (``||H||`` estimated
    by the largest Ritz value in magnitude; for the bottom pairs, solved on ``H - lambda_max I``,
    the spread ``lambda_max - lambda_min``); ARPACK's relative accuracy for ``eigsh``.
    ``max_iter`` caps Lanczos steps (default ``min(dim, 300)``), power iterations per pair
    (1000) or ARPACK restarts.  ``trace_probes=0`` skips the trace, ``density_probes=0`` the
    density, ``bottom=False`` the bottom pairs; ``blocks=n > 0`` adds the top-n eigenpairs
    and the smallest eigenpair of each layer's diagonal block.
    """

    k: int = 5
    method: str = "lanczos"
    tol: float = 1e-5
    max_iter: int | None = None
    trace_probes: int = 50
    density_probes: int = 3
    density_iters: int = 80
    density_points: int = 1000
    seed: int = 0
    bottom: bool = True
    blocks: int = 0

    @property
    def solver(self) -> spectral.SolverOptions:
        return spectral.SolverOptions(self.method, self.tol, self.max_iter)

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
        pos_int("blocks", self.blocks, zero_ok=True)


@dataclass(frozen=True)
class PairSet:
    """Eigenpairs as stored: values float64 numpy (most extreme first), vectors float32 CPU with
    a canonical sign, residuals ``||H v - lambda v||`` float64 numpy, and the stopping test
    ``residual <= tol * scale`` they were held to."""

    values: np.ndarray
    vectors: Tensor
    residuals: np.ndarray
    scale: float
    tol: float

    @classmethod
    def of(cls, pairs: spectral.Eigenpairs) -> PairSet:
        return cls(pairs.values.double().numpy(), canonical_sign(pairs.vectors).float().cpu(),
                   pairs.residuals.double().numpy(), pairs.scale, pairs.tol)

    @classmethod
    def empty(cls, dim: int) -> PairSet:
        return cls(np.zeros(0), torch.zeros(0, dim), np.zeros(0), math.nan, math.nan)

    @property
    def converged(self) -> np.ndarray:
        return self.residuals <= self.tol * self.scale


@dataclass
class SpectrumReport:
    """Eigenpairs, trace and density of one Hessian (or GGN / Fisher)."""

    top: PairSet
    bottom: PairSet  # ascending: the most negative first
    trace: float = math.nan
    trace_stderr: float = math.nan
    trace_samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    density_grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    density: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slq_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slq_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bulk: spectral.BulkSplit | None = None
    blocks: list[BlockSpectrum] = field(default_factory=list)
    num_hvp: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        return float(self.top.values[0])

    @property
    def lambda_min(self) -> float:
        return float(self.bottom.values[0]) if len(self.bottom.values) else math.nan

    @property
    def ratio(self) -> float:
        return eigen_ratio(self.lambda_min, self.lambda_max)

    def convergence(self) -> Convergence:
        sets = {"top": self.top, "bottom": self.bottom, **{f"block {b.name} top": b.top for b in self.blocks},
                **{f"block {b.name} bottom": b.bottom for b in self.blocks}}
        return Convergence.of(sets, self.lambda_max)


@dataclass(frozen=True)
class Convergence:
    """How many of a result's eigenpairs met their stopping test, and the worst residual."""

    num_pairs: int
    num_unconverged: int
    unconverged: tuple[str, ...]  # "top 3", "bottom 1", ... (1-based)
    max_residual: float  # the largest ||H v - lambda v||
    max_relative: float  # ... divided by |lambda_max|
    tol: float

    @classmethod
    def of(cls, sets: Mapping[str, PairSet], lambda_max: float) -> Convergence:
        bad = tuple(f"{name} {i + 1}" for name, ps in sets.items() for i in np.nonzero(~ps.converged)[0])
        res = np.concatenate([ps.residuals for ps in sets.values()] or [np.zeros(0)])
        worst = float(res.max()) if res.size else 0.0
        tols = [ps.tol for ps in sets.values() if len(ps.values)]
        return cls(int(res.size), len(bad), bad, worst, worst / abs(lambda_max) if lambda_max else math.nan,
                   float(max(tols)) if tols else math.nan)

    @property
    def converged(self) -> bool:
        return self.num_unconverged == 0

    def line(self) -> str:
        """One line for the job's output."""
        if self.converged:
            return (f"all {self.num_pairs} eigenpairs converged (largest residual ||Hv - lambda v|| = "
                    f"{self.max_residual:.2g} = {self.max_relative:.2g} lambda_max, tol {self.tol:g})")
        shown = ", ".join(self.unconverged[:6]) + (", ..." if len(self.unconverged) > 6 else "")
        return (f"WARNING: {self.num_unconverged} of {self.num_pairs} eigenpairs did NOT converge ({shown}; "
                f"largest residual {self.max_relative:.2g} lambda_max > tol {self.tol:g}): each such value is only "
                "known to within its residual; raise hessian.max_iter")

    def summary(self) -> dict[str, Any]:
        return {"converged": self.converged, "unconverged_pairs": list(self.unconverged),
                "max_residual": self.max_residual, "max_residual_relative": self.max_relative}


@dataclass(frozen=True)
class BlockSpectrum:
    """The top eigenpairs and the smallest one of a diagonal block of the curvature (one layer)."""

    name: str
    param_names: tuple[str, ...]
    dim: int
    top: PairSet
    bottom: PairSet
    num_hvp: int


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


class Progress:
    """What a running report says (``say``, e.g. ``print``): the time of the first product, and
    each stage's start, with its cost where its number of products is known in advance, and its
    end; so a large model is never silent for long, in a log as on a terminal."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.first_said = False

    def timed(self, matvec: Callable[[Tensor], Tensor], device: torch.device) -> Callable[[Tensor], Tensor]:
        """``matvec``, saying how long its first product took."""
        def mv(v: Tensor) -> Tensor:
            if self.first_said:
                return matvec(v)
            t0 = time.perf_counter()
            out = matvec(v)
            _sync(device)
            self.first_said = True
            self.say(f"hessian: one product over the data takes {duration(time.perf_counter() - t0)}")
            return out
        return mv

    def start(self, label: str, planned: int | None, per_product: float | None) -> None:
        cost = ""
        if planned:
            cost = f"{planned} products" + (f", about {duration(planned * per_product)}" if per_product else "")
        self.say(f"hessian: {label}" + (f" ({cost})" if cost else "") + " ...")

    def end(self, label: str, products: int, seconds: float) -> None:
        self.say(f"hessian: {label}: {products} products in {duration(seconds)}")


def _pairs(n: int) -> str:
    return f"{n} eigenpair" + ("" if n == 1 else "s")


@contextlib.contextmanager
def _stage(op: HessianOperator, name: str, num_hvp: dict[str, int], seconds: dict[str, float],
           progress: Progress | None = None, label: str = "", planned: int | None = None,
           quiet_start: bool = False) -> Iterator[None]:
    """Count the HVPs and time of one stage of a report into ``num_hvp``/``seconds`` (and say
    so through ``progress``)."""
    if progress is not None and not quiet_start:  # the cost at the rate of the report's stages so far
        done = sum(num_hvp.values())
        progress.start(label or name, planned, sum(seconds.values()) / done if done else None)
    n0, t0 = op.num_hvp, time.perf_counter()
    yield
    _sync(op.device)
    num_hvp[name], seconds[name] = op.num_hvp - n0, time.perf_counter() - t0
    if progress is not None:
        progress.end(label or name, num_hvp[name], seconds[name])


def layer_blocks(selection: ParamSelection) -> list[tuple[str, list[int]]]:
    """The selected tensors grouped by the module they belong to (``fc1.weight`` and
    ``fc1.bias`` form block ``fc1``), in order: ``[(name, positions in selection.params)]``."""
    out: dict[str, list[int]] = {}
    for i, n in enumerate(selection.names):
        out.setdefault(n.rsplit(".", 1)[0] if "." in n else n, []).append(i)
    return list(out.items())


def block_spectra(selection: ParamSelection, make: Any, settings: SpectrumSettings, num_hvp: dict[str, int],
                  seconds: dict[str, float], progress: Progress | None = None) -> list[BlockSpectrum]:
    """Per layer: the top-``settings.blocks`` eigenpairs and (``settings.bottom``) the smallest
    eigenpair of the diagonal block of the curvature for that layer's selected tensors.
    ``make(params)`` builds the block's operator (the same curvature, data and batching as the
    whole one); HVPs and seconds go to ``num_hvp``/``seconds`` as ``"block <name>"``."""
    out = []
    blocks = layer_blocks(selection)
    if progress is not None:
        progress.say(f"hessian: the top {_pairs(settings.blocks)} of each of {len(blocks)} layers' blocks ...")
    for j, (name, idx) in enumerate(blocks):
        bop = make([selection.params[i] for i in idx])
        kw = dict(options=settings.solver, device=bop.device)
        bottom = PairSet.empty(bop.dim)
        with _stage(bop, f"block {name}", num_hvp, seconds, progress, quiet_start=True):
            top = spectral.top_eigenpairs(bop.matvec, bop.dim, min(settings.blocks, bop.dim),
                                          generator=_generator(settings.seed + 10 + j), **kw)
            if settings.bottom and bop.dim > 1:
                bottom = PairSet.of(spectral.bottom_eigenpairs(bop.matvec, bop.dim, 1, float(top.values[0]),
                                                               generator=_generator(settings.seed + 10 + j), **kw))
        out.append(BlockSpectrum(name, tuple(selection.names[i] for i in idx), bop.dim, PairSet.of(top), bottom,
                                 bop.num_hvp))
    return out


def spectrum_report(op: HessianOperator, settings: SpectrumSettings, *, selection: ParamSelection | None = None,
                    make_block: Any = None, say: Callable[[str], None] | None = None) -> SpectrumReport:
    """Top-k and bottom-k eigenpairs with residuals, Hutchinson trace, SLQ density with its bulk
    edge and outliers, and (``settings.blocks > 0``, given ``selection`` and ``make_block``) the
    per-layer block spectra of ``op``'s curvature. ``say``: where the progress lines go (see
    :class:`Progress`); none without it.

    Each stage draws from its own generator (seeds ``seed``, ``seed+1``, ... ), so changing ``k``
    does not change the trace probes.  HVP counts and wall times are recorded per stage.
    """
    s, dim, dev = settings, op.dim, op.device
    if s.k > dim:
        raise UserError(f"hessian.k={s.k} exceeds the number of parameters the Hessian acts on ({dim})")
    num_hvp: dict[str, int] = {}
    seconds: dict[str, float] = {}
    kw = dict(options=s.solver, device=dev)
    progress = Progress(say) if say is not None else None
    first = progress.timed(op.matvec, dev) if progress is not None else op.matvec
    iters = min(s.density_iters, dim)
    with fp32(dev):
        with _stage(op, "top", num_hvp, seconds, progress, f"top {_pairs(s.k)}"):
            top = spectral.top_eigenpairs(first, dim, s.k, which="LA", generator=_generator(s.seed), **kw)
        bottom = PairSet.empty(dim)
        if s.bottom:
            with _stage(op, "bottom", num_hvp, seconds, progress, f"bottom {_pairs(s.k)}"):
                bottom = PairSet.of(spectral.bottom_eigenpairs(op.matvec, dim, s.k, float(top.values[0]),
                                                               generator=_generator(s.seed + 1), **kw))
        report = SpectrumReport(PairSet.of(top), bottom)
        if s.trace_probes:
            with _stage(op, "trace", num_hvp, seconds, progress, f"trace, {s.trace_probes} Hutchinson probes", s.trace_probes):
                tr, se, samples = spectral.hutchinson_trace(op.matvec, dim, s.trace_probes,
                                                            generator=_generator(s.seed + 2), device=dev)
            report.trace, report.trace_stderr, report.trace_samples = tr, se, samples.numpy()
        if s.density_probes:
            with _stage(op, "density", num_hvp, seconds, progress,
                        f"spectral density, {s.density_probes} SLQ probes of {iters} steps", s.density_probes * iters):
                d = spectral.slq_density(op.matvec, dim, num_probes=s.density_probes, num_iters=iters,
                                         num_points=s.density_points, generator=_generator(s.seed + 3), device=dev)
            report.density_grid, report.density = d.grid.numpy(), d.density.numpy()
            report.slq_nodes, report.slq_weights = d.nodes.numpy(), d.weights.numpy()
            report.bulk = spectral.bulk_split(d.nodes, d.weights, dim, probe=d.probe)
        if s.blocks and selection is not None and make_block is not None:
            report.blocks = block_spectra(selection, make_block, s, num_hvp, seconds, progress)
    report.num_hvp = {**num_hvp, "total": sum(num_hvp.values())}
    report.seconds = {**seconds, "total": sum(seconds.values())}
    return report


def report_summary(report: SpectrumReport) -> dict[str, Any]:
    """The numbers of a report for ``summary.json``: eigenvalues with residuals and converged
    flags, the convergence verdict, trace, bulk split and block spectra."""
    out: dict[str, Any] = {
        "lambda_max": report.lambda_max, "lambda_min": report.lambda_min, "ratio": report.ratio,
        "top_eigenvalues": report.top.values.tolist(), "bottom_eigenvalues": report.bottom.values.tolist(),
        "top_residuals": report.top.residuals.tolist(), "bottom_residuals": report.bottom.residuals.tolist(),
        "top_converged": report.top.converged.tolist(), "bottom_converged": report.bottom.converged.tolist(),
        "tol": report.top.tol, "residual_scale": {"top": report.top.scale, "bottom": report.bottom.scale},
        **report.convergence().summary(), "trace": report.trace, "trace_stderr": report.trace_stderr,
        "num_hvp": report.num_hvp, "hessian_seconds": report.seconds,
    }
    if report.bulk is not None:
        out.update(bulk_edge=report.bulk.edge, num_outliers=report.bulk.num_outliers, bulk_rule=report.bulk.rule)
    if report.blocks:
        out["blocks"] = {b.name: {"dim": b.dim, "top_eigenvalues": b.top.values.tolist(),
                                  "top_residuals": b.top.residuals.tolist(), "top_converged": b.top.converged.tolist(),
                                  "lambda_min": float(b.bottom.values[0]) if len(b.bottom.values) else math.nan,
                                  "lambda_min_residual": float(b.bottom.residuals[0]) if len(b.bottom.values) else math.nan,
                                  "num_hvp": b.num_hvp} for b in report.blocks}
    return out


def report_metrics(report: SpectrumReport, prefix: str = "hessian/") -> dict[str, float]:
    """Scalars for the tracker: extremes, trace, the convergence verdict and every pair's
    residual (``top_residual/1``, ``bottom_residual/1``, ...) and flag."""
    conv = report.convergence()
    m: dict[str, float] = {"lambda_max": report.lambda_max, "lambda_min": report.lambda_min, "ratio": report.ratio,
                           "trace": report.trace, "converged": float(conv.converged),
                           "num_unconverged": float(conv.num_unconverged), "max_residual": conv.max_residual,
                           "max_residual_relative": conv.max_relative}
    for part, ps in (("top", report.top), ("bottom", report.bottom)):
        for i, (r, ok) in enumerate(zip(ps.residuals, ps.converged), start=1):
            m[f"{part}_residual/{i}"], m[f"{part}_converged/{i}"] = float(r), float(ok)
    if report.bulk is not None:
        m.update(bulk_edge=report.bulk.edge, num_outliers=float(report.bulk.num_outliers))
    for b in report.blocks:
        m[f"block/{b.name}/lambda_max"] = float(b.top.values[0])
        m[f"block/{b.name}/residual"] = float(b.top.residuals[0])
    return {prefix + k: v for k, v in m.items()}


def extreme_point(op: HessianOperator, *, method: str = "lanczos", tol: float = 1e-4, max_iter: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """``lambda_max``, ``lambda_min`` (shift trick), their ratio, HVPs used and seconds at the
    model's current weights: one point of a ``hessian_surface``; also the residuals of both
    pairs (``residual_max``, ``residual_min``) and ``converged`` (1.0 when both met ``tol``)."""
    n0, t0 = op.num_hvp, time.perf_counter()
    with fp32(op.device):
        top, bot = spectral.extreme_eigenvalues(op.matvec, op.dim, options=spectral.SolverOptions(method, tol, max_iter),
                                                min_method="shift", generator=_generator(seed), device=op.device)
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
    with fp32(op.device), _stage(op, "gradient", num_hvp, seconds):
        grad = op.gradient().double().cpu()
        loss = op.loss()
    top, bulk = report.top, report.bulk
    return {"lambda_max": report.lambda_max, "trace": report.trace, "trace_stderr": report.trace_stderr, "loss": loss,
            "num_hvp": report.num_hvp["total"] + num_hvp["gradient"],
            "seconds": report.seconds["total"] + seconds["gradient"], "grad_norm": float(grad.norm()),
            "gradient_top_fraction": spectral.fraction_in_subspace(grad, top.vectors.double()),
            "bulk_edge": bulk.edge if bulk else math.nan, "num_outliers": bulk.num_outliers if bulk else -1,
            "top_eigenvalues": top.values, "top_residuals": top.residuals, "top_converged": top.converged,
            "top_eigenvectors": top.vectors}


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
