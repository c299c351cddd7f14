"""Flatness of a minimum under random perturbations: average-case (Gaussian) sharpness with a
confidence interval, and the PAC-Bayes flatness of Jiang et al. 2019 ("Fantastic generalization
measures and where to find them", arXiv 1912.02178), each plain and magnitude-aware.

With ``theta`` the flat vector of perturbed parameters and ``xi ~ N(0, I)``:

* plain perturbation ``u = sigma * xi`` (``u ~ N(0, sigma^2 I)``);
* magnitude-aware ``u_i = sqrt(sigma^2 theta_i^2 + eps^2) * xi_i`` (Jiang et al.'s
  ``u_i ~ N(0, sigma'^2 |w_i|^2 + eps^2)``; ``eps = 1e-3`` in their paper). With ``eps = 0`` it is
  exactly invariant to the rescalings ``w_l -> c w_l, w_{l+1} -> w_{l+1}/c`` around a ReLU that
  leave the network's function unchanged: the perturbed network is the rescaled perturbed one.

Measures (``L`` the mean loss, or error, over the data):

* **Gaussian sharpness** ``E_u[L(theta + u)] - L(theta)`` by Monte Carlo over ``samples`` draws,
  with a two-sided Student-t interval over the draws (``mean +- t_{n-1} s / sqrt(n)``). For
  ``L = 1/2 w^T H w`` at its minimum the expectation is ``sigma^2 tr(H) / 2`` exactly.
* **PAC-Bayes sigma**: the largest ``sigma`` with ``E_u[L(theta + u)] - L(theta) <= target``, by
  bracketing and bisection; the expectation is estimated with the *same* draws ``xi_1..xi_n`` at
  every ``sigma`` (common random numbers), so the estimate is a deterministic, for a quadratic
  monotone, function of ``sigma`` and bisection converges. Jiang et al. report ``1/sigma^2``
  (``pac_bayes_flatness``) with the training *error* and a target deviation of 0.1; for
  ``L = 1/2 w^T H w`` the loss version is ``sqrt(2 target / tr(H))``.

Every random draw comes from a CPU generator seeded with ``seed`` and the draw's index, so values
are reproducible on any device and two models with parameters in the same order see identical
noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from landscape_exp.config.choices import FLATNESS_METRICS
from landscape_exp.config.measures import FlatnessSettings
from landscape_exp.errors import UserError
from landscape_exp.measures.record import Measure
from landscape_exp.weights.params import ParamSelection, select_parameters

EvalFn = Callable[[Tensor], float]  # flat perturbation -> L(theta + delta)


def noise_scale(theta: Tensor, sigma: float, *, magnitude: bool = False, eps: float = 0.0) -> Tensor:
    """Per-coordinate standard deviation of the perturbation: ``sigma`` or ``sqrt(sigma^2 theta^2 + eps^2)``."""
    if magnitude:
        return torch.sqrt((sigma * theta.double()) ** 2 + eps * eps).to(theta.dtype)
    return torch.full_like(theta, float(sigma))


def standard_noise(n: int, k: int, seed: int, like: Tensor) -> Tensor:
    """Draw ``k`` of ``N(0, I_n)``, from a CPU generator seeded by ``(seed, k)``, as ``like``'s dtype/device."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(k))
    return torch.randn(n, generator=gen, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class GaussianEstimate:
    """``value`` = mean of ``diffs`` (``L(theta + u_k) - L(theta)``), its t-interval at ``confidence``."""

    value: float
    ci_low: float
    ci_high: float
    base: float
    diffs: np.ndarray
    confidence: float


def t_interval(x: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student-t interval of the mean of ``x`` (NaN bounds for one sample)."""
    a = np.asarray(x, dtype=np.float64)
    m = float(a.mean())
    if a.size < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return m, m - half, m + half


def _check(sigma: float, samples: int) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise UserError(f"flatness sigma={sigma!r} must be a positive number")
    if int(samples) < 2:
        raise UserError(f"flatness samples={samples!r} must be >= 2 (the interval needs two draws)")


def gaussian_sharpness(fn: EvalFn, theta: Tensor, sigma: float, *, samples: int = 10, seed: int = 0,
                       magnitude: bool = False, eps: float = 0.0, confidence: float = 0.95) -> GaussianEstimate:
    """``E[L(theta + u)] - L(theta)`` over ``samples`` draws of the perturbation (see the module)."""
    _check(sigma, samples)
    scale = noise_scale(theta, sigma, magnitude=magnitude, eps=eps)
    base = float(fn(torch.zeros_like(theta)))
    diffs = np.array([float(fn(scale * standard_noise(theta.numel(), k, seed, theta))) - base for k in range(int(samples))])
    m, lo, hi = t_interval(diffs, confidence)
    return GaussianEstimate(m, lo, hi, base, diffs, confidence)


@dataclass(frozen=True)
class SigmaSearch:
    """``sigma``: the largest tried sigma whose estimated increase is ``<= target`` (``increase``);
    ``upper``: the smallest tried one above it; ``evaluations``: sigmas tried (each ``samples`` passes)."""

    sigma: float
    increase: float
    upper: float
    evaluations: int


def pac_bayes_sigma(fn: EvalFn, theta: Tensor, target: float, *, samples: int = 10, seed: int = 0,
                    magnitude: bool = False, eps: float = 0.0, rel_tol: float = 1e-2, start: float = 1.0,
                    max_steps: int = 60) -> SigmaSearch:
    """The largest ``sigma`` with ``mean_k L(theta + u_k(sigma)) - L(theta) <= target`` (common draws).

    Brackets from ``start`` by doubling or halving, then bisects until ``upper/sigma - 1 <= rel_tol``.
    """
    if not (math.isfinite(target) and target > 0):
        raise UserError(f"flatness target={target!r} must be a positive number")
    _check(start, samples)
    base = float(fn(torch.zeros_like(theta)))
    noise = [standard_noise(theta.numel(), k, seed, theta) for k in range(int(samples))]
    count = 0

    def increase(s: float) -> float:
        nonlocal count
        count += 1
        scale = noise_scale(theta, s, magnitude=magnitude, eps=eps)
        v = float(np.mean([float(fn(scale * xi)) for xi in noise])) - base
        return v if math.isfinite(v) else math.inf  # a diverged network is far above any target

    lo, hi, f_lo = 0.0, float(start), 0.0
    f = increase(hi)
    if f <= target:  # grow until above the target
        while f <= target:
            lo, f_lo, hi = hi, f, 2 * hi
            if count >= max_steps:
                return SigmaSearch(lo, f_lo, math.inf, count)
            f = increase(hi)
    else:  # shrink until below it
        s = hi
        while f > target:
            hi, s = s, s / 2
            if count >= max_steps:
                return SigmaSearch(0.0, 0.0, hi, count)
            f = increase(s)
        lo, f_lo = s, f
    while hi / lo - 1 > rel_tol and count < max_steps:
        mid = 0.5 * (lo + hi)
        f = increase(mid)
        if f <= target:
            lo, f_lo = mid, f
        else:
            hi = mid
    return SigmaSearch(lo, f_lo, hi, count)


# ------------------------------------------------------------------------------------------------
# a model on data


def model_eval_fn(model: nn.Module, params: ParamSelection, batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
                  loss: str, metric: str = "loss") -> EvalFn:
    """``delta -> L(theta + delta)``: mean loss, or error fraction (``metric="error"``), over the
    batches, the model called through ``torch.func.functional_call`` (its own tensors untouched)."""
    from landscape_exp.engine.evaluation import mean_loss_fn

    if metric not in FLATNESS_METRICS:
        raise UserError(f"flatness metric {metric!r} is not one of: {', '.join(FLATNESS_METRICS)}")
    loss_fn = mean_loss_fn(loss)
    names = list(params.names)
    base = [p.detach() for p in params.params]
    sizes = [b.numel() for b in base]

    @torch.no_grad()
    def fn(delta: Tensor) -> float:
        ws = {n: b + d.view_as(b) for n, b, d in zip(names, base, delta.split(sizes))}
        total, n = torch.zeros((), dtype=torch.float64, device=base[0].device), 0
        for x, y in batches():
            out = torch.func.functional_call(model, ws, (x,))
            if metric == "loss":
                total += loss_fn(out, y).double() * y.shape[0]
            else:
                total += (out.argmax(1) != y).sum().double()
            n += int(y.shape[0])
        if n == 0:
            raise UserError("flatness got no data: the batches are empty")
        return float(total) / n

    return fn


def flatness_measures(model: nn.Module, data: Any, fs: FlatnessSettings, *, loss: str = "crossentropy",
                      batch_size: int = 512, max_samples: int | None = None, seed: int = 0) -> dict[str, Measure]:
    """Gaussian and PAC-Bayes flatness of ``model`` (eval mode) on a DeviceData split, as measures:
    ``gaussian_sharpness``, ``gaussian_mag_sharpness`` (with intervals), ``pac_bayes_sigma``,
    ``pac_bayes_flatness`` (``1/sigma^2``), ``pac_bayes_mag_sigma``, ``pac_bayes_mag_flatness``."""
    n = len(data) if max_samples is None else min(len(data), int(max_samples))
    bs = int(batch_size)

    def batches() -> Iterable[tuple[Tensor, Tensor]]:
        for s in range(0, n, bs):
            yield data.normalize(data.images[s:min(s + bs, n)]), data.targets[s:min(s + bs, n)]

    sel = select_parameters(model, purpose="to perturb")
    theta = sel.vector()
    was_training = model.training
    model.eval()
    out: dict[str, Measure] = {}
    try:
        if fs.gaussian:
            fn = model_eval_fn(model, sel, batches, loss, "loss")
            for tag, sigma, mag in (("", fs.sigma, False), ("mag_", fs.mag_sigma, True)):
                g = gaussian_sharpness(fn, theta, sigma, samples=fs.samples, seed=seed, magnitude=mag, eps=fs.eps if mag else 0.0,
                                       confidence=fs.confidence)
                out[f"gaussian_{tag}sharpness"] = Measure(g.value, g.ci_low, g.ci_high, True)
        if fs.pac_bayes:
            fn = model_eval_fn(model, sel, batches, loss, fs.metric)
            for tag, mag in (("", False), ("mag_", True)):
                r = pac_bayes_sigma(fn, theta, fs.target, samples=fs.pac_bayes_samples, seed=seed, magnitude=mag,
                                    eps=fs.eps if mag else 0.0, rel_tol=fs.rel_tol)
                # no interval: the bisection's bracket is not a confidence interval
                out[f"pac_bayes_{tag}sigma"] = Measure(r.sigma, higher_is_sharper=False)
                out[f"pac_bayes_{tag}flatness"] = Measure(1.0 / r.sigma**2 if r.sigma > 0 else math.inf,
                                                          higher_is_sharper=True)
    finally:
        model.train(was_training)
    return out
