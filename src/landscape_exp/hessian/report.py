"""The certified spectrum report of one curvature operator: top and bottom eigenpairs with their
residuals and converged flags, Hutchinson's trace, the SLQ density and its bulk/outlier split, the
per-layer block spectra, the products and seconds each stage took, and their summaries. Runs in
full fp32 (TF32 off on CUDA, no autocast): curvature from reduced precision is mostly noise."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape_exp.config.hessian import SpectrumSettings
from landscape_exp.engine.precision import Precision, precision_context
from landscape_exp.errors import UserError
from landscape_exp.format import duration
from landscape_exp.hessian import density, spectral
from landscape_exp.hessian.operators import HessianOperator
from landscape_exp.weights.params import ParamSelection


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
    bulk: density.BulkSplit | None = None
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


def seeded_generator(seed: int) -> torch.Generator:
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
            sync(device)
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
def timed_stage(op: HessianOperator, name: str, num_hvp: dict[str, int], seconds: dict[str, float],
           progress: Progress | None = None, label: str = "", planned: int | None = None,
           quiet_start: bool = False) -> Iterator[None]:
    """Count the HVPs and time of one stage of a report into ``num_hvp``/``seconds`` (and say
    so through ``progress``)."""
    if progress is not None and not quiet_start:  # the cost at the rate of the report's stages so far
        done = sum(num_hvp.values())
        progress.start(label or name, planned, sum(seconds.values()) / done if done else None)
    n0, t0 = op.num_hvp, time.perf_counter()
    yield
    sync(op.device)
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
        kw = dict(options=spectral.SolverOptions(settings.method, settings.tol, settings.max_iter), device=bop.device)
        bottom = PairSet.empty(bop.dim)
        with timed_stage(bop, f"block {name}", num_hvp, seconds, progress, quiet_start=True):
            top = spectral.top_eigenpairs(bop.matvec, bop.dim, min(settings.blocks, bop.dim),
                                          generator=seeded_generator(settings.seed + 10 + j), **kw)
            if settings.bottom and bop.dim > 1:
                bottom = PairSet.of(spectral.bottom_eigenpairs(bop.matvec, bop.dim, 1, float(top.values[0]),
                                                               generator=seeded_generator(settings.seed + 10 + j), **kw))
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
    kw = dict(options=spectral.SolverOptions(s.method, s.tol, s.max_iter), device=dev)
    progress = Progress(say) if say is not None else None
    first = progress.timed(op.matvec, dev) if progress is not None else op.matvec
    iters = min(s.density_iters, dim)
    with fp32(dev):
        with timed_stage(op, "top", num_hvp, seconds, progress, f"top {_pairs(s.k)}"):
            top = spectral.top_eigenpairs(first, dim, s.k, which="LA", generator=seeded_generator(s.seed), **kw)
        bottom = PairSet.empty(dim)
        if s.bottom:
            with timed_stage(op, "bottom", num_hvp, seconds, progress, f"bottom {_pairs(s.k)}"):
                bottom = PairSet.of(spectral.bottom_eigenpairs(op.matvec, dim, s.k, float(top.values[0]),
                                                               generator=seeded_generator(s.seed + 1), **kw))
        report = SpectrumReport(PairSet.of(top), bottom)
        if s.trace_probes:
            with timed_stage(op, "trace", num_hvp, seconds, progress, f"trace, {s.trace_probes} Hutchinson probes",
                             s.trace_probes):
                tr, se, samples = density.hutchinson_trace(op.matvec, dim, s.trace_probes,
                                                            generator=seeded_generator(s.seed + 2), device=dev)
            report.trace, report.trace_stderr, report.trace_samples = tr, se, samples.numpy()
        if s.density_probes:
            with timed_stage(op, "density", num_hvp, seconds, progress,
                        f"spectral density, {s.density_probes} SLQ probes of {iters} steps", s.density_probes * iters):
                d = density.slq_density(op.matvec, dim, num_probes=s.density_probes, num_iters=iters,
                                         num_points=s.density_points, generator=seeded_generator(s.seed + 3), device=dev)
            report.density_grid, report.density = d.grid.numpy(), d.density.numpy()
            report.slq_nodes, report.slq_weights = d.nodes.numpy(), d.weights.numpy()
            report.bulk = density.bulk_split(d.nodes, d.weights, dim, probe=d.probe)
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


FP32 = Precision("fp32")


# ----------------------------------------------------------------------------- parameters


@contextlib.contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Full fp32: TF32 off for matmuls and cuDNN convolutions (restored afterwards), no autocast."""
    with precision_context(FP32, device):
        yield


# ----------------------------------------------------------------------------- spectra


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
