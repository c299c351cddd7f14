"""The spectrum beyond its extremes, on a matrix-vector product: Hutchinson's trace, the spectral
density by stochastic Lanczos quadrature (Ghorbani et al. 2019), the split of that density into a
bulk and outliers, and overlaps of eigenvector subspaces."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from landscape_exp.errors import UserError, choice_error
from landscape_exp.hessian.spectral import (
    PROBES,
    MatVec,
    check_dtype,
    check_positive_int,
    lanczos,
    orthonormal_rows,
    rademacher,
    randn,
    resolve_device,
    wrapped_operator,
)


def hutchinson_trace(matvec: MatVec, dim: int, num_probes: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float64) -> tuple[float, float, Tensor]:
    """Hutchinson's estimate of ``tr(H)`` from ``num_probes`` Rademacher probes ``z``.

    Each sample is ``z . H z`` (unbiased; variance ``2 sum_{i != j} H_ij^2``).  Returns
    ``(mean, std(samples, ddof=1) / sqrt(num_probes), samples (num_probes,) float64 CPU)``.
    The samples stay on the device until the end: one host sync in total.
    """
    check_positive_int("dim", dim)
    check_positive_int("num_probes", num_probes)
    if num_probes < 2:
        raise UserError(f"num_probes must be >= 2 to estimate a standard error, got {num_probes}")
    mv, dev, dtype = wrapped_operator(matvec, dim, device, dtype)
    samples = torch.empty(num_probes, device=dev, dtype=torch.float64)
    for i in range(num_probes):
        z = rademacher(dim, generator, dev, dtype)
        samples[i] = (z @ mv(z)).double()
    samples = samples.cpu()
    return float(samples.mean()), float(samples.std(correction=1) / math.sqrt(num_probes)), samples


def gaussian_density(nodes: Tensor, weights: Tensor, grid: Tensor, sigma: float) -> Tensor:
    """``sum_j weights_j N(grid; nodes_j, sigma^2)`` evaluated on ``grid`` (float64)."""
    grid64, nodes64, w64 = (t.detach().to("cpu", torch.float64) for t in (grid, nodes, weights))
    out = torch.zeros_like(grid64)
    norm = 1.0 / math.sqrt(2.0 * math.pi * sigma * sigma)
    for start in range(0, len(nodes64), 2048):  # chunks bound the (grid x nodes) memory
        d = grid64[:, None] - nodes64[None, start:start + 2048]
        out += (torch.exp(-0.5 * (d / sigma) ** 2) * norm) @ w64[start:start + 2048]
    return out


class SLQDensity(NamedTuple):
    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    probe: Tensor


def slq_density(
    matvec: MatVec,
    dim: int,
    *,
    num_probes: int,
    num_iters: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    grid: Tensor | None = None,
    sigma: float | None = None,
    num_points: int = 1000,
    probe: str = "gaussian",
    dtype: torch.dtype = torch.float64,
) -> SLQDensity:
    """Spectral density of ``H`` by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    For each probe ``v`` (unit norm; Gaussian or Rademacher direction, so ``E[v v^T] = I/dim``)
    run ``num_iters`` Lanczos steps and eigen-decompose ``T = S diag(theta) S^T``: the Gauss
    quadrature nodes are the Ritz values ``theta`` and the weights ``S[0, :]^2`` (they sum to 1),
    so ``sum_j w_j f(theta_j) ~ v^T f(H) v`` and, averaged over probes, ``~ tr f(H) / dim``.

    The density is the Gaussian-kernel smoothing of the nodes with standard deviation ``sigma``
    (variance ``sigma^2``), normalised to integrate to one on ``grid`` by the trapezoid rule.
    Defaults: ``sigma^2 = 1e-5 * max(1, width)`` as PyHessian (``width`` = span of the nodes),
    widened to at least two grid spacings so the kernel is resolved on the grid; ``grid`` =
    ``num_points`` equally spaced points over the nodes padded by ``max(5 sigma, 2% width)``.

    Returns ``SLQDensity(grid, density, nodes, weights, probe)``: float64 CPU tensors;
    ``nodes``/``weights`` concatenate all probes, with weights divided by ``num_probes`` so they
    sum to one, and ``probe`` (int64) says which probe each node came from.
    """
    check_positive_int("dim", dim)
    check_positive_int("num_probes", num_probes)
    check_positive_int("num_iters", num_iters)
    check_positive_int("num_points", num_points)
    if probe not in PROBES:
        raise choice_error("probe", probe, PROBES)
    if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
        raise UserError(f"sigma must be a number > 0, got {sigma!r}")
    if grid is not None and (grid.dim() != 1 or len(grid) < 2):
        raise UserError(f"grid must be a 1-D tensor of at least 2 points, got shape {tuple(grid.shape)}")
    if grid is None and num_points < 2:
        raise UserError(f"num_points must be >= 2, got {num_points}")
    dtype = check_dtype(dtype)
    dev = resolve_device(device, matvec)

    all_nodes, all_weights, all_probes = [], [], []
    for p in range(num_probes):
        v = (randn if probe == "gaussian" else rademacher)(dim, generator, dev, dtype)
        alpha, beta, _ = lanczos(matvec, dim, num_iters, device=dev, dtype=dtype, v0=v)
        T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
        theta, S = torch.linalg.eigh(T)
        all_nodes.append(theta)
        all_weights.append(S[0] ** 2 / num_probes)
        all_probes.append(torch.full((len(theta),), p, dtype=torch.int64))
    nodes, weights = torch.cat(all_nodes), torch.cat(all_weights)

    width = float(nodes.max() - nodes.min())
    base_sigma = math.sqrt(1e-5 * max(1.0, width))
    if grid is None:
        pad = max(5.0 * (sigma if sigma is not None else base_sigma), 0.02 * width)
        grid = torch.linspace(float(nodes.min()) - pad, float(nodes.max()) + pad, num_points,
                              dtype=torch.float64)
    else:
        grid = grid.detach().to("cpu", torch.float64)
    if sigma is None:
        spacing = float(grid[-1] - grid[0]) / (len(grid) - 1)
        sigma = max(base_sigma, 2.0 * spacing)
    density = gaussian_density(nodes, weights, grid, sigma)
    total = float(torch.trapezoid(density, grid))
    if not total > 0:
        raise UserError(f"the grid [{float(grid[0])}, {float(grid[-1])}] holds no density mass; "
                        f"widen it to cover the nodes [{float(nodes.min())}, {float(nodes.max())}]")
    return SLQDensity(grid, density / total, nodes, weights, torch.cat(all_probes))


# ----------------------------------------------------------------------------- bulk and outliers, subspaces


BULK_WIDTH = 0.02  # kernel width of the bulk/outlier split, as a fraction of the spectrum's span


BULK_COUNT = 8.0  # eigenvalues within about one kernel width that make a point part of the bulk


BULK_RULE = (f"bulk edge = largest t with dim * sum_j w_j exp(-(t - node_j)^2 / (2 sigma^2)) >= {BULK_COUNT:g} over the "
             f"SLQ nodes node_j and weights w_j (about {BULK_COUNT:g} eigenvalues within one kernel width), sigma = "
             f"{BULK_WIDTH:g} x the span of the nodes; outliers = Ritz values above the edge, median over probes")


@dataclass(frozen=True)
class BulkSplit:
    """Where the bulk of a spectrum ends and how many outlier eigenvalues lie above it."""

    edge: float  # the bulk's upper edge (NaN when nothing is dense enough to be a bulk)
    num_outliers: int  # median over probes of the Ritz values above the edge
    per_probe: tuple[int, ...]
    width: float  # the kernel width sigma
    min_count: float

    @property
    def rule(self) -> str:
        if self.min_count == BULK_COUNT:
            return f"{BULK_RULE} (here sigma = {self.width:.4g})"
        return f"{BULK_RULE.replace(f'>= {BULK_COUNT:g}', f'>= {self.min_count:g}')} (here sigma = {self.width:.4g})"


def bulk_split(nodes: Tensor, weights: Tensor, dim: int, *, probe: Tensor | None = None, width_frac: float = BULK_WIDTH,
               min_count: float = BULK_COUNT, num_points: int = 4001) -> BulkSplit:
    """Split a spectrum into a bulk and outliers (Sagun et al. 2017; Papyan 2019) from SLQ nodes.

    ``n(t) = dim * sum_j w_j exp(-(t - node_j)^2 / (2 sigma^2))`` counts the eigenvalues within
    about one kernel width ``sigma = width_frac * span(nodes)`` of ``t`` (each quadrature weight
    stands for ``w_j * dim`` eigenvalues).  The bulk's upper edge is the largest ``t`` where
    ``n(t) >= min_count``: an isolated eigenvalue, even with a quadrature weight several times
    its share, stays below the count, while the bulk exceeds it by orders of magnitude.  The
    number of outliers is the number of Ritz values above the edge in each probe's Lanczos run
    (top eigenvalues converge first, so each is one eigenvalue), the median over probes.
    ``probe`` gives each node's probe (``None``: one probe).  For an exact spectrum pass the
    eigenvalues as nodes with weights ``1/dim``.
    """
    check_positive_int("dim", dim)
    x = nodes.detach().to("cpu", torch.float64).reshape(-1)
    w = weights.detach().to("cpu", torch.float64).reshape(-1)
    if x.numel() == 0 or x.shape != w.shape:
        raise UserError(f"bulk_split needs nodes and weights of one shape, got {tuple(x.shape)} and {tuple(w.shape)}")
    ids = torch.zeros(x.numel(), dtype=torch.int64) if probe is None else probe.detach().to("cpu").reshape(-1)
    span = float(x.max() - x.min())
    sigma = width_frac * span if span > 0 else 1.0
    t = torch.linspace(float(x.min()), float(x.max()), num_points, dtype=torch.float64)
    count = torch.zeros_like(t)
    for start in range(0, x.numel(), 2048):  # chunks bound the (grid x nodes) memory
        d = (t[:, None] - x[None, start:start + 2048]) / sigma
        count += torch.exp(-0.5 * d * d) @ w[start:start + 2048]
    dense = torch.nonzero(count * dim >= min_count).reshape(-1)
    if dense.numel() == 0:
        return BulkSplit(math.nan, 0, (), sigma, min_count)
    edge = float(t[int(dense.max())])
    per = tuple(int((x[ids == p] > edge).sum()) for p in torch.unique(ids).tolist())
    return BulkSplit(edge, int(np.median(per)), per, sigma, min_count)


def subspace_overlap(a: Tensor, b: Tensor) -> float:
    """``||A B^T||_F^2 / k`` for the row spaces of ``a`` and ``b`` (each re-orthonormalised, k =
    the smaller number of rows): 1 for the same subspace, about ``k / dim`` for random ones
    (Gur-Ari et al. 2018's overlap of top-k Hessian subspaces)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) == 0:
        raise UserError(f"subspace_overlap needs two (k, dim) matrices, got {tuple(a.shape)} and {tuple(b.shape)}")
    qa, qb = orthonormal_rows(a), orthonormal_rows(b)
    return float((qa @ qb.T).pow(2).sum()) / min(qa.shape[0], qb.shape[0])


def fraction_in_subspace(g: Tensor, basis: Tensor) -> float:
    """``||P g||^2 / ||g||^2`` with ``P`` the projector onto the row space of ``basis`` (NaN for
    ``g = 0``): the part of the gradient in the top-k Hessian subspace (Gur-Ari et al. 2018)."""
    if g.dim() != 1 or basis.dim() != 2 or basis.shape[1] != g.numel():
        raise UserError(f"fraction_in_subspace needs g (dim,) and basis (k, dim), got {tuple(g.shape)} and {tuple(basis.shape)}")
    g64 = g.detach().to("cpu", torch.float64)
    total = float(g64 @ g64)
    return float((orthonormal_rows(basis) @ g64).pow(2).sum()) / total if total > 0 else math.nan
