"""Sharpness of the model itself, by projected gradient ascent on a flat perturbation of its
parameters: epsilon-sharpness (Keskar et al. 2017) in a box, adaptive sharpness (Kwon et al.
2021) in a scaled ball, and the Hessian's lambda_max and trace (:mod:`landscape_exp.measures.sharpness`
defines them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from landscape_exp.errors import UserError
from landscape_exp.measures.surface_shape import PREFIX
from landscape_exp.weights.params import ParamSelection, select_parameters

Objective = Callable[[Tensor], tuple[Tensor, Tensor]]


Batch = tuple[Tensor, Tensor]


BatchSource = Iterable[Batch] | Callable[[], Iterable[Batch]]


LossFn = Callable[[Tensor, Tensor], Tensor]


# ================================================================================================
# Model-based measures: projected gradient ascent on flat perturbation vectors
# ================================================================================================
def _gen(seed: int) -> torch.Generator:
    # Starts are drawn on the CPU and moved: the same seed gives the same start on CPU and CUDA.
    return torch.Generator().manual_seed(int(seed))


def _check_steps(steps: int, restarts: int) -> None:
    if int(steps) < 0 or int(restarts) < 1:
        raise UserError(f"sharpness steps={steps} must be >= 0 and restarts={restarts} >= 1")


def box_ascent(objective: Objective, bound: Tensor, *, steps: int = 10, step_size: float | None = None,
               restarts: int = 1, seed: int = 0) -> tuple[float, Tensor]:
    """``max f(delta)`` over the box ``|delta_i| <= bound_i`` by projected sign-gradient ascent.

    The sign of the gradient is the steepest-ascent direction for the box's (infinity) norm;
    each step moves every coordinate by ``step_size * bound_i`` (default ``2.5 / steps``, so a
    coordinate can cross the box in the allotted steps) and clips back into the box. Starts are
    uniform in the box. Returns ``(best value, its delta)`` over all iterates of all restarts.
    """
    _check_steps(steps, restarts)
    alpha = (2.5 / max(int(steps), 1)) if step_size is None else float(step_size)

    def start(gen: torch.Generator) -> Tensor:
        u = torch.rand(bound.shape, generator=gen, dtype=torch.float64).to(bound.device, bound.dtype)
        return (2 * u - 1) * bound

    def step(delta: Tensor, g: Tensor) -> Tensor:
        return torch.clamp(delta + alpha * bound * torch.sign(g), -bound, bound)

    return _ascend(objective, bound, start, lambda delta: delta, step, steps=steps, restarts=restarts, seed=seed)


def ball_ascent(objective: Objective, scale: Tensor, rho: float, *, steps: int = 10,
                step_size: float | None = None, restarts: int = 1, seed: int = 0) -> tuple[float, Tensor]:
    """``max f(scale * u)`` over the ball ``||u||_2 <= rho`` by normalized gradient ascent in ``u``.

    The gradient in ``u`` is ``scale * grad f`` (ASAM's scaled gradient); each step moves ``u``
    by ``step_size * rho`` (default 1) along it and projects back onto the ball. Starts are
    uniform on the sphere. For a quadratic ``f = d^T H d / 2`` this is a shifted power iteration
    on ``T H T``, converging to ``rho^2 / 2 * lambda_max(T H T)``. Returns ``(best value, its
    delta = scale * u)`` over all iterates of all restarts.
    """
    _check_steps(steps, restarts)
    if not (math.isfinite(rho) and rho > 0):
        raise UserError(f"sharpness rho={rho!r} must be a positive number")
    alpha = 1.0 if step_size is None else float(step_size)

    def start(gen: torch.Generator) -> Tensor:
        u = torch.randn(scale.shape, generator=gen, dtype=torch.float64).to(scale.device, scale.dtype)
        return u * (rho / u.norm().clamp_min(1e-30))

    def step(u: Tensor, g: Tensor) -> Tensor | None:
        gu = scale * g
        gn = gu.norm()
        if float(gn) == 0.0:
            return None  # a stationary point of the scaled problem: nowhere to go
        u = u + (alpha * rho / gn) * gu
        return u * torch.clamp(rho / u.norm(), max=1.0)

    return _ascend(objective, scale, start, lambda u: scale * u, step, steps=steps, restarts=restarts, seed=seed)


def _ascend(objective: Objective, like: Tensor, start: Callable[[torch.Generator], Tensor],
            to_delta: Callable[[Tensor], Tensor], step: Callable[[Tensor, Tensor], Tensor | None], *,
            steps: int, restarts: int, seed: int) -> tuple[float, Tensor]:
    """The ascent loop both maxima share: from each of ``restarts`` starts (drawn from one
    generator seeded with ``seed``), ``steps`` moves of the iterate ``z``; ``f`` is evaluated at
    ``to_delta(z)`` and the best value and its delta over all iterates are kept. ``step``
    returns None where the iterate cannot move (that restart ends)."""
    gen = _gen(seed)
    best, best_delta = -math.inf, torch.zeros_like(like)
    for _ in range(int(restarts)):
        z = start(gen)
        for s in range(int(steps) + 1):
            delta = to_delta(z)
            f, g = objective(delta)
            fv = float(f)
            if fv > best or not math.isfinite(best):
                best, best_delta = fv, delta.detach().clone()
            if s == int(steps):
                break
            moved = step(z, g)
            if moved is None:
                break
            z = moved
    return best, best_delta


def _batches(source: BatchSource) -> Iterable[Batch]:
    return source() if callable(source) else source


def loss_objective(model: nn.Module, params: ParamSelection, batches: BatchSource, loss_fn: LossFn) -> Objective:
    """``delta -> (L(theta + delta), grad L(theta + delta))`` over all batches (flat vectors).

    ``L`` is the mean of ``loss_fn`` over every sample (``loss_fn`` returns the batch mean); the
    other parameters and buffers of ``model`` are held as they are. The model is called through
    ``torch.func.functional_call``, so its own tensors are never changed.
    """
    names = list(params.names)
    base = [p.detach() for p in params.params]
    sizes = [b.numel() for b in base]

    def objective(delta: Tensor) -> tuple[Tensor, Tensor]:
        parts = delta.split(sizes)
        ws = [(b + d.view_as(b)).requires_grad_(True) for b, d in zip(base, parts)]
        total = torch.zeros((), dtype=torch.float64, device=base[0].device)
        grads = [torch.zeros_like(b) for b in base]
        n = 0
        for x, y in _batches(batches):
            out = torch.func.functional_call(model, dict(zip(names, ws)), (x,))
            bs = int(y.shape[0])
            loss = loss_fn(out, y) * bs  # summed over the batch: divided by N once at the end
            g = torch.autograd.grad(loss, ws, allow_unused=True)
            total += loss.detach().double()
            for acc, gi in zip(grads, g):
                if gi is not None:
                    acc += gi
            n += bs
        if n == 0:
            raise UserError("sharpness got no data: the batches are empty")
        return total / n, torch.cat([gi.reshape(-1) for gi in grads]) / n

    return objective


@dataclass(frozen=True)
class SharpnessResult:
    """``value``: the sharpness; ``base_loss``: ``L(theta)``; ``max_loss``: the best ``L(theta + delta)``
    found; ``delta``: that perturbation (flat, in the order of the selected parameters)."""

    value: float
    base_loss: float
    max_loss: float
    delta: Tensor


def epsilon_sharpness(model: nn.Module, batches: BatchSource, loss_fn: LossFn, *, eps: float = 1e-3,
                      params: Sequence[str] | None = None, steps: int = 10, step_size: float | None = None,
                      restarts: int = 1, seed: int = 0) -> SharpnessResult:
    """Keskar et al. (2017): ``100 (max_{|delta_i| <= eps (|theta_i|+1)} L(theta+delta) - L(theta)) / (1 + L(theta))``.

    Perturbs every trainable parameter (or the named ``params``) by :func:`box_ascent`; the
    model should be in eval mode (BatchNorm running statistics) and is left unchanged.
    """
    if not (math.isfinite(eps) and eps > 0):
        raise UserError(f"sharpness eps={eps!r} must be a positive number")
    sel = select_parameters(model, None, params, purpose="to perturb")
    obj = loss_objective(model, sel, batches, loss_fn)
    theta = sel.vector()
    base = float(obj(torch.zeros_like(theta))[0])
    best, delta = box_ascent(obj, eps * (theta.abs() + 1), steps=steps, step_size=step_size,
                             restarts=restarts, seed=seed)
    best = max(best, base)  # delta = 0 is in the box
    return SharpnessResult(100.0 * (best - base) / (1.0 + base), base, best, delta)


def adaptive_sharpness(model: nn.Module, batches: BatchSource, loss_fn: LossFn, *, rho: float = 0.05,
                       eta: float = 0.01, params: Sequence[str] | None = None, steps: int = 10,
                       step_size: float | None = None, restarts: int = 1, seed: int = 0) -> SharpnessResult:
    """Kwon et al. (2021): ``max_{||T^-1 delta||_2 <= rho} L(theta + delta) - L(theta)``, ``T = |theta| + eta``.

    By :func:`ball_ascent` in ``u = T^-1 delta``. ``eta > 0`` lets parameters at zero move (as
    in ASAM) at the price of exact scale invariance, which holds for ``eta = 0``.
    """
    if not (math.isfinite(eta) and eta >= 0):
        raise UserError(f"sharpness eta={eta!r} must be a number >= 0")
    sel = select_parameters(model, None, params, purpose="to perturb")
    obj = loss_objective(model, sel, batches, loss_fn)
    theta = sel.vector()
    base = float(obj(torch.zeros_like(theta))[0])
    best, delta = ball_ascent(obj, theta.abs() + eta, rho, steps=steps, step_size=step_size,
                              restarts=restarts, seed=seed)
    best = max(best, base)
    return SharpnessResult(best - base, base, best, delta)


def hessian_sharpness(model: nn.Module, batches: BatchSource, loss_fn: LossFn, num_samples: int, *,
                      params: Sequence[str] | None = None, iters: int = 20, probes: int = 10,
                      seed: int = 0) -> dict[str, float]:
    """``{"lambda_max": top Hessian eigenvalue (Lanczos, iters steps), "trace": Hutchinson estimate}``."""
    from landscape_exp.hessian.density import hutchinson_trace
    from landscape_exp.hessian.operators import HessianOperator
    from landscape_exp.hessian.spectral import SolverOptions, top_eigenpairs

    sel = select_parameters(model, None, params, purpose="to take the Hessian with respect to")
    op = HessianOperator(model, list(sel.params), batches, loss_fn, num_samples)
    gen = torch.Generator().manual_seed(int(seed))
    top = top_eigenpairs(op, op.dim, 1, options=SolverOptions("lanczos", 1e-3, max(1, min(int(iters), op.dim))),
                         generator=gen)
    trace, _, _ = hutchinson_trace(op, op.dim, max(int(probes), 2), generator=gen)
    return {"lambda_max": float(top.values[0]), "trace": trace}


def model_sharpness(model: nn.Module, data: Any, *, loss: str = "crossentropy", batch_size: int = 512,
                    max_samples: int | None = None, eps: float = 1e-3, rho: float = 0.05, eta: float = 0.01,
                    steps: int = 10, restarts: int = 1, seed: int = 0, hessian: bool = False,
                    hessian_iters: int = 20, hessian_probes: int = 10, progress: bool = False) -> dict[str, float]:
    """Model-based sharpness of ``model`` (in eval mode, fp32) on a :class:`~landscape_exp.data.device.DeviceData` split.

    Keys: ``sharpness/epsilon``, ``sharpness/adaptive``, ``sharpness/base_loss`` and, with
    ``hessian``, ``sharpness/lambda_max`` and ``sharpness/trace``. ``max_samples`` keeps the
    first samples of the split only (the whole split by default).
    """
    from landscape_exp.engine.evaluation import mean_loss_fn

    if int(batch_size) < 1:
        raise UserError(f"sharpness.batch_size={batch_size} must be >= 1")
    n = len(data) if max_samples is None else min(len(data), int(max_samples))
    if n < 1:
        raise UserError(f"sharpness.max_samples={max_samples} leaves no data; use null or a positive number")
    bs = int(batch_size)
    bar = tqdm(total=ascent_passes(steps, restarts), desc="sharpness", unit="pass", disable=not progress)

    def batches() -> Iterable[Batch]:
        for s in range(0, n, bs):
            e = min(s + bs, n)
            yield data.normalize(data.images[s:e]), data.targets[s:e]
        bar.update(1)

    loss_fn = mean_loss_fn(loss)
    was_training = model.training
    model.eval()
    try:
        kw = dict(steps=int(steps), restarts=int(restarts), seed=int(seed))
        es = epsilon_sharpness(model, batches, loss_fn, eps=float(eps), **kw)
        ad = adaptive_sharpness(model, batches, loss_fn, rho=float(rho), eta=float(eta), **kw)
        out = {f"{PREFIX}epsilon": es.value, f"{PREFIX}adaptive": ad.value, f"{PREFIX}base_loss": es.base_loss}
        if hessian:
            h = hessian_sharpness(model, batches, loss_fn, n, iters=int(hessian_iters), probes=int(hessian_probes),
                                  seed=int(seed))
            out.update({f"{PREFIX}{k}": v for k, v in h.items()})
    finally:
        bar.close()
        model.train(was_training)
    return out


def ascent_passes(steps: int, restarts: int) -> int:
    """Passes over the data of the two ascents (epsilon and adaptive): each evaluates L(theta) once,
    then ``steps`` gradient steps and the final point per restart."""
    return 2 * ((int(steps) + 1) * int(restarts) + 1)
