"""Sharpness of a minimum, from a computed loss surface and from the model itself.

From a filter-normalized 1D/2D surface ``f`` around the checkpoint (``f(0) = L(theta)``; Li et
al. 2018 argue these are comparable across networks because filter normalization removes the
ReLU/BatchNorm scale invariance):

* **loss rise at radius r**: the mean of ``f`` over the points at distance ``r`` from the centre
  minus ``f(0)``: ``(f(-r) + f(r))/2 - f(0)`` in 1D (linear interpolation between grid points),
  the mean over the circle of radius ``r`` in 2D (bilinear interpolation). For ``f = c a^2`` it
  is ``c r^2``. NaN where the points leave the grid.
* **basin width at threshold t**: the connected sublevel set ``{f <= f(0) + t}`` around the
  centre. In 1D its length (``2 sqrt(t/c)`` for ``c a^2``); in 2D twice its mean radius along
  rays from the centre (the same ``2 sqrt(t/c)`` for ``c (a^2 + b^2)``) and its area. A basin
  that reaches the edge of the grid is *open*: the width is then a lower bound.

From the model (``L`` the mean loss over the given data):

* **epsilon-sharpness** (Keskar et al. 2017):
  ``100 * (max_{|delta_i| <= eps (|theta_i| + 1)} L(theta + delta) - L(theta)) / (1 + L(theta))``.
* **adaptive sharpness** (Kwon et al. 2021, ASAM): ``max_{||T^-1 delta||_2 <= rho} L(theta +
  delta) - L(theta)`` with ``T = diag(|theta| + eta)``. With ``eta = 0`` it is exactly invariant
  to rescalings that leave the network's function unchanged (``w1 -> c w1, w2 -> w2 / c`` around
  a ReLU), which epsilon-sharpness is not (Dinh et al. 2017).

Both maxima are found by projected gradient ascent from a random start inside the set (at a
minimum the gradient vanishes, so a start at ``delta = 0`` would not move); every iterate is
feasible, so the reported value is a lower bound on the true maximum that tightens with ``steps``.
``lambda_max`` and the trace of the Hessian come from :mod:`landscape_exp.spectral`.

Metrics are returned as flat ``{"sharpness/<name>": float}`` dicts (summary, W&B, CSV) and stored
in the surface file's ``sharpness`` attribute (JSON) by :func:`landscape_exp.surface.store.store_sharpness`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator
from torch import Tensor, nn
from tqdm import tqdm

from landscape_exp.errors import UserError

PREFIX = "sharpness/"

Objective = Callable[[Tensor], tuple[Tensor, Tensor]]
Batch = tuple[Tensor, Tensor]
BatchSource = Iterable[Batch] | Callable[[], Iterable[Batch]]
LossFn = Callable[[Tensor, Tensor], Tensor]


# ================================================================================================
# Surface-based measures
# ================================================================================================
def _axis(c: Any, name: str) -> np.ndarray:
    a = np.asarray(c, dtype=np.float64)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)) or not np.all(np.diff(a) > 0):
        raise UserError(f"{name} coordinates must be a strictly increasing 1-D array of >= 2 finite numbers")
    return a


def _positive(values: Iterable[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    bad = [v for v in out if not (math.isfinite(v) and v > 0)]
    if bad:
        raise UserError(f"sharpness {name} must be positive numbers; got {bad[0]!r}")
    return out


def _values_1d(x: Any, loss: Any) -> tuple[np.ndarray, np.ndarray]:
    xa = _axis(x, "x")
    v = np.asarray(loss, dtype=np.float64)
    if v.shape != xa.shape:
        raise UserError(f"loss has shape {v.shape}; expected {xa.shape} like the coordinates")
    return xa, v


def centre_value_1d(x: Any, loss: Any) -> float:
    """``f(0)`` by linear interpolation (NaN if 0 is outside the grid)."""
    xa, v = _values_1d(x, loss)
    return float(np.interp(0.0, xa, v)) if xa[0] <= 0.0 <= xa[-1] else math.nan


def loss_rise_at_radii(x: Any, loss: Any, radii: Sequence[float] = (0.1, 0.25, 0.5, 1.0)) -> dict[float, float]:
    """``{r: (f(-r) + f(r))/2 - f(0)}`` on a 1D surface (linear interpolation; NaN off the grid)."""
    xa, v = _values_1d(x, loss)
    c = centre_value_1d(xa, v)
    out = {}
    for r in _positive(radii, "radii"):
        if -r < xa[0] or r > xa[-1]:
            out[r] = math.nan
        else:
            out[r] = float(0.5 * (np.interp(-r, xa, v) + np.interp(r, xa, v)) - c)
    return out


def _first_crossing(dist: np.ndarray, vals: np.ndarray, level: float) -> tuple[float, bool]:
    """Distance along a ray (``dist[0] = 0`` at the centre, increasing) where ``vals`` first
    exceeds ``level``, linearly interpolated; ``(dist[-1], False)`` if it never does.

    A non-finite value counts as above the level; the crossing is then put at the last finite
    point before it (where the loss went is unknown, so the basin is not extended into it).
    """
    above = ~(vals <= level)  # NaN compares False: above
    idx = np.flatnonzero(above)
    if idx.size == 0:
        return float(dist[-1]), False
    k = int(idx[0])
    if k == 0:
        return 0.0, True
    a, b = vals[k - 1], vals[k]
    if not np.isfinite(b) or b == a:
        return float(dist[k - 1]), True
    frac = (level - a) / (b - a)
    return float(dist[k - 1] + frac * (dist[k] - dist[k - 1])), True


def basin_interval(x: Any, loss: Any, threshold: float) -> tuple[float, float, bool]:
    """``(lo, hi, closed)``: the connected interval around 0 where ``f <= f(0) + threshold``.

    The ends are linearly interpolated between grid points; ``closed`` is False when the
    interval reaches an end of the grid (then ``lo``/``hi`` are the grid's ends there).
    """
    xa, v = _values_1d(x, loss)
    (t,) = _positive([threshold], "thresholds")
    c = centre_value_1d(xa, v)
    if not math.isfinite(c):
        return math.nan, math.nan, False
    level = c + t
    right = xa > 0
    left = xa < 0
    r, rc = _first_crossing(np.concatenate([[0.0], xa[right]]), np.concatenate([[c], v[right]]), level)
    l_, lc = _first_crossing(np.concatenate([[0.0], -xa[left][::-1]]), np.concatenate([[c], v[left][::-1]]), level)
    return -l_, r, bool(rc and lc)


def basin_width(x: Any, loss: Any, threshold: float) -> float:
    """Length of :func:`basin_interval` (a lower bound if the basin is open)."""
    lo, hi, _ = basin_interval(x, loss, threshold)
    return hi - lo


def _values_2d(x: Any, y: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xa, ya = _axis(x, "x"), _axis(y, "y")
    za = np.asarray(z, dtype=np.float64)
    if za.shape != (ya.size, xa.size):
        raise UserError(f"2D loss has shape {za.shape}; expected (ny, nx) = {(ya.size, xa.size)}")
    return xa, ya, za


def _bilinear(xa: np.ndarray, ya: np.ndarray, za: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``f(a, b)`` by bilinear interpolation of ``za[j, i] = f(x_i, y_j)``; NaN outside."""
    # inf would turn into NaN in the interpolation weights anyway; make that explicit.
    zf = np.where(np.isfinite(za), za, np.nan)
    interp = RegularGridInterpolator((ya, xa), zf, method="linear", bounds_error=False, fill_value=np.nan)
    return lambda a, b: interp(np.stack([np.asarray(b, float).ravel(), np.asarray(a, float).ravel()], axis=1))


def centre_value_2d(x: Any, y: Any, z: Any) -> float:
    xa, ya, za = _values_2d(x, y, z)
    return float(_bilinear(xa, ya, za)(np.zeros(1), np.zeros(1))[0])


def loss_rise_2d(x: Any, y: Any, z: Any, radii: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
                 n_angles: int = 256) -> dict[float, float]:
    """``{r: mean over the circle of radius r of f - f(0)}`` (bilinear; NaN if the circle leaves the grid)."""
    xa, ya, za = _values_2d(x, y, z)
    f = _bilinear(xa, ya, za)
    c = float(f(np.zeros(1), np.zeros(1))[0])
    ang = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    out = {}
    for r in _positive(radii, "radii"):
        if -r < xa[0] or r > xa[-1] or -r < ya[0] or r > ya[-1]:
            out[r] = math.nan
        else:
            out[r] = float(np.mean(f(r * np.cos(ang), r * np.sin(ang))) - c)
    return out


def basin_radii_2d(x: Any, y: Any, z: Any, threshold: float, n_angles: int = 256,
                   oversample: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(radius, closed)`` per ray: where ``f`` first exceeds ``f(0) + threshold`` along each of
    ``n_angles`` rays from the centre (``closed`` False where the ray reaches the grid edge first).

    Rays are sampled every ``min(dx, dy) / oversample`` with bilinear interpolation.
    """
    xa, ya, za = _values_2d(x, y, z)
    (t,) = _positive([threshold], "thresholds")
    f = _bilinear(xa, ya, za)
    c = float(f(np.zeros(1), np.zeros(1))[0])
    radii = np.full(n_angles, math.nan)
    closed = np.zeros(n_angles, dtype=bool)
    if not math.isfinite(c):
        return radii, closed
    h = min(np.diff(xa).min(), np.diff(ya).min()) / max(int(oversample), 1)
    for k, th in enumerate(np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)):
        ca, sa = math.cos(th), math.sin(th)
        # distance from the centre to the grid's boundary along this ray
        reach = min((xa[-1] if ca > 0 else xa[0]) / ca if abs(ca) > 1e-12 else math.inf,
                    (ya[-1] if sa > 0 else ya[0]) / sa if abs(sa) > 1e-12 else math.inf)
        n = max(int(math.ceil(reach / h)), 1)
        d = np.linspace(0.0, reach, n + 1)
        vals = f(d * ca, d * sa)
        vals[0] = c
        radii[k], closed[k] = _first_crossing(d, vals, c + t)
    return radii, closed


def basin_width_2d(x: Any, y: Any, z: Any, threshold: float, n_angles: int = 256) -> tuple[float, bool]:
    """``(2 * mean ray radius, closed)`` of the basin (a lower bound where it is open)."""
    r, closed = basin_radii_2d(x, y, z, threshold, n_angles)
    return float(2.0 * np.mean(r)), bool(closed.all())


def basin_area_2d(x: Any, y: Any, z: Any, threshold: float, oversample: int = 8) -> tuple[float, bool]:
    """``(area, closed)`` of the connected region of ``{f <= f(0) + threshold}`` holding the centre.

    The surface is resampled ``oversample`` times finer by bilinear interpolation before the
    region is labelled, so a smooth boundary is resolved to a fraction of a grid cell; ``closed``
    is False when the region touches the grid's edge.
    """
    xa, ya, za = _values_2d(x, y, z)
    (t,) = _positive([threshold], "thresholds")
    f = _bilinear(xa, ya, za)
    c = float(f(np.zeros(1), np.zeros(1))[0])
    if not math.isfinite(c):
        return math.nan, False
    k = max(int(oversample), 1)
    fx = np.linspace(xa[0], xa[-1], (xa.size - 1) * k + 1)
    fy = np.linspace(ya[0], ya[-1], (ya.size - 1) * k + 1)
    gx, gy = np.meshgrid(fx, fy)
    inside = (f(gx, gy) <= c + t).reshape(gx.shape)
    labels, _ = ndimage.label(inside)
    j, i = int(np.abs(fy).argmin()), int(np.abs(fx).argmin())
    lab = labels[j, i]
    if lab == 0:
        return 0.0, True
    region = labels == lab
    # each fine sample stands for its cell; samples on the edge for half (corners a quarter)
    wx = np.full(fx.size, fx[1] - fx[0])
    wx[[0, -1]] *= 0.5
    wy = np.full(fy.size, fy[1] - fy[0])
    wy[[0, -1]] *= 0.5
    area = float((region * wy[:, None] * wx[None, :]).sum())
    touches = region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()
    return area, not touches


def _fmt(v: float) -> str:
    return f"{v:g}"


def surface_sharpness(surface: Mapping[str, Any], *, metric: str | None = None,
                      radii: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
                      thresholds: Sequence[float] = (0.1, 1.0)) -> dict[str, float]:
    """Surface-based sharpness of a surface as returned by ``read_surface``.

    Keys: ``sharpness/rise_r<r>``, ``sharpness/width_t<t>``, ``sharpness/basin_open_t<t>`` (1.0
    if the basin reaches the grid's edge: the width is then a lower bound) and, for 2D surfaces,
    ``sharpness/area_t<t>``. ``metric`` None: ``train_loss``, else ``test_loss``. Points not
    computed yet are treated as missing (NaN).
    """
    held = [k for k in surface if k.endswith(("_loss", "_acc"))]
    if metric:
        if metric not in surface:
            raise UserError(f"sharpness.metric={metric!r} is not in the surface; it holds: {', '.join(held)}")
        key = metric
    else:
        key = next((k for k in ("train_loss", "test_loss") if k in surface), None)
        if key is None:
            return {}
    z = np.asarray(surface[key], dtype=np.float64).copy()
    done = surface.get("done")
    if done is not None:
        z[~np.asarray(done, dtype=bool).reshape(z.shape)] = np.nan
    out: dict[str, float] = {}
    if surface.get("y") is not None and len(surface["y"]) == 1:  # a 1xN grid (y=v:v:1) is a 1D slice
        surface, z = {**surface, "y": None}, z.ravel()
    if surface.get("y") is None:
        x = surface["x"]
        out.update({f"{PREFIX}rise_r{_fmt(r)}": v for r, v in loss_rise_at_radii(x, z, radii).items()})
        for t in _positive(thresholds, "thresholds"):
            lo, hi, closed = basin_interval(x, z, t)
            out[f"{PREFIX}width_t{_fmt(t)}"] = hi - lo
            out[f"{PREFIX}basin_open_t{_fmt(t)}"] = 0.0 if closed else 1.0
        return out
    x, y = surface["x"], surface["y"]
    out.update({f"{PREFIX}rise_r{_fmt(r)}": v for r, v in loss_rise_2d(x, y, z, radii).items()})
    for t in _positive(thresholds, "thresholds"):
        width, closed = basin_width_2d(x, y, z, t)
        area, aclosed = basin_area_2d(x, y, z, t)
        out[f"{PREFIX}width_t{_fmt(t)}"] = width
        out[f"{PREFIX}area_t{_fmt(t)}"] = area
        out[f"{PREFIX}basin_open_t{_fmt(t)}"] = 0.0 if (closed and aclosed) else 1.0
    return out


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


def loss_objective(model: nn.Module, params: Sequence[tuple[str, nn.Parameter]], batches: BatchSource,
                   loss_fn: LossFn) -> Objective:
    """``delta -> (L(theta + delta), grad L(theta + delta))`` over all batches (flat vectors).

    ``L`` is the mean of ``loss_fn`` over every sample (``loss_fn`` returns the batch mean); the
    other parameters and buffers of ``model`` are held as they are. The model is called through
    ``torch.func.functional_call``, so its own tensors are never changed.
    """
    names = [n for n, _ in params]
    base = [p.detach() for _, p in params]
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


def _select_params(model: nn.Module, params: Sequence[str] | None) -> list[tuple[str, nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
    if params is not None:
        want = set(params)
        missing = want - {n for n, _ in named}
        if missing:
            raise UserError(f"sharpness params {sorted(missing)} are not trainable parameters of the model; "
                            f"allowed: {', '.join(n for n, _ in named)}")
        named = [(n, p) for n, p in named if n in want]
    if not named:
        raise UserError("the model has no trainable parameters to perturb")
    return named


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
    sel = _select_params(model, params)
    obj = loss_objective(model, sel, batches, loss_fn)
    theta = torch.cat([p.detach().reshape(-1) for _, p in sel])
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
    sel = _select_params(model, params)
    obj = loss_objective(model, sel, batches, loss_fn)
    theta = torch.cat([p.detach().reshape(-1) for _, p in sel])
    base = float(obj(torch.zeros_like(theta))[0])
    best, delta = ball_ascent(obj, theta.abs() + eta, rho, steps=steps, step_size=step_size,
                              restarts=restarts, seed=seed)
    best = max(best, base)
    return SharpnessResult(best - base, base, best, delta)


def hessian_sharpness(model: nn.Module, batches: BatchSource, loss_fn: LossFn, num_samples: int, *,
                      params: Sequence[str] | None = None, iters: int = 20, probes: int = 10,
                      seed: int = 0) -> dict[str, float]:
    """``{"lambda_max": top Hessian eigenvalue (Lanczos, iters steps), "trace": Hutchinson estimate}``."""
    from landscape_exp.hvp import HessianOperator
    from landscape_exp.spectral import SolverOptions, hutchinson_trace, top_eigenpairs

    sel = [p for _, p in _select_params(model, params)]
    op = HessianOperator(model, sel, batches, loss_fn, num_samples)
    gen = torch.Generator().manual_seed(int(seed))
    top = top_eigenpairs(op, op.dim, 1, options=SolverOptions("lanczos", 1e-3, max(1, min(int(iters), op.dim))),
                         generator=gen)
    trace, _, _ = hutchinson_trace(op, op.dim, max(int(probes), 2), generator=gen)
    return {"lambda_max": float(top.values[0]), "trace": trace}


def model_sharpness(model: nn.Module, data: Any, *, loss: str = "crossentropy", batch_size: int = 512,
                    max_samples: int | None = None, eps: float = 1e-3, rho: float = 0.05, eta: float = 0.01,
                    steps: int = 10, restarts: int = 1, seed: int = 0, hessian: bool = False,
                    hessian_iters: int = 20, hessian_probes: int = 10, progress: bool = False) -> dict[str, float]:
    """Model-based sharpness of ``model`` (in eval mode, fp32) on a :class:`~landscape_exp.data.DeviceData` split.

    Keys: ``sharpness/epsilon``, ``sharpness/adaptive``, ``sharpness/base_loss`` and, with
    ``hessian``, ``sharpness/lambda_max`` and ``sharpness/trace``. ``max_samples`` keeps the
    first samples of the split only (the whole split by default).
    """
    from landscape_exp.evaluation import mean_loss_fn

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


# ================================================================================================
# Wiring: one call from a surface task, and the surface file's attribute
# ================================================================================================
@dataclass(frozen=True)
class SharpnessSettings:
    """The ``sharpness`` config group; ``conf/sharpness/default.yaml`` documents every field and
    holds the defaults. ``radii`` and ``thresholds`` are stored as tuples of floats.

    A disabled instance (``enabled`` false) is not validated beyond ``enabled``: nothing else of
    it is read (``conf/sharpness/none.yaml`` sets only ``enabled``).
    """

    enabled: bool
    metric: str | None
    radii: tuple[float, ...]
    thresholds: tuple[float, ...]
    model: bool
    eps: float
    rho: float
    eta: float
    steps: int
    restarts: int
    batch_size: int
    max_samples: int | None
    hessian: bool
    hessian_iters: int
    hessian_probes: int
    seed: int
    flatness: Any  # the flatness.FlatnessSettings of the `flatness` block (read from its mapping here)

    def __post_init__(self) -> None:
        _check_bool("enabled", self.enabled)
        if not self.enabled:
            return
        if self.metric is not None and not (isinstance(self.metric, str) and self.metric):
            raise UserError(f"sharpness.metric={self.metric!r} must be the name of a surface metric "
                            "(e.g. train_loss, test_loss) or null")
        for name in ("radii", "thresholds"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise UserError(f"sharpness.{name}={value!r} must be a list of positive numbers")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
                raise UserError(f"sharpness.{name}={list(value)!r} must be a list of positive numbers")
            object.__setattr__(self, name, tuple(_positive(value, name)))  # frozen: normalise once here
        _check_bool("model", self.model)
        _check_bool("hessian", self.hessian)
        _check_number("eps", self.eps, "a positive number", lambda v: v > 0)
        _check_number("rho", self.rho, "a positive number", lambda v: v > 0)
        _check_number("eta", self.eta, "a number >= 0", lambda v: v >= 0)
        _check_int("steps", self.steps, 0)
        _check_int("restarts", self.restarts, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.max_samples is not None:
            _check_int("max_samples", self.max_samples, 1, " or null (the whole training split)")
        _check_int("hessian_iters", self.hessian_iters, 1)
        _check_int("hessian_probes", self.hessian_probes, 1)
        _check_int("seed", self.seed, None)
        from landscape_exp.flatness import FlatnessSettings

        if not isinstance(self.flatness, FlatnessSettings):  # frozen: normalise once here
            object.__setattr__(self, "flatness", FlatnessSettings.from_mapping(self.flatness))

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> SharpnessSettings:
        """Settings from the resolved ``sharpness`` config group. With ``enabled: false`` the other
        keys may be absent; otherwise a missing key is a UserError naming it."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(map(str, d)) - set(names))
        if unknown:
            raise UserError(f"unknown sharpness setting(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        if "enabled" not in d:
            raise UserError("the config has no sharpness.enabled; choose sharpness=default or sharpness=none")
        _check_bool("enabled", d["enabled"])
        if not d["enabled"]:
            return cls(**{n: d.get(n) for n in names})
        missing = [n for n in names if n not in d]
        if missing:
            raise UserError(f"the config has no sharpness.{missing[0]}; it is set in conf/sharpness/default.yaml "
                            f"(missing: {', '.join(missing)})")
        return cls(**{n: d[n] for n in names})


def _check_bool(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise UserError(f"sharpness.{name}={v!r} must be true or false")


def _check_number(name: str, v: Any, what: str, ok: Callable[[float], bool]) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
        raise UserError(f"sharpness.{name}={v!r} must be {what}")


def _check_int(name: str, v: Any, minimum: int | None, alternative: str = "") -> None:
    if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
        what = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        raise UserError(f"sharpness.{name}={v!r} must be {what}{alternative}")


def sharpness_summary(surface: Mapping[str, Any], settings: SharpnessSettings | None, *,
                      model: nn.Module | None = None, data: Any = None, loss: str = "crossentropy",
                      progress: bool = False) -> dict[str, float]:
    """All sharpness metrics of one checkpoint's surface.

    Surface-based measures from ``surface`` (as ``read_surface`` returns it); model-based ones
    when ``model`` and ``data`` (the training split on the model's device) are given and
    ``settings.model`` is true. Returns ``{}`` when ``settings`` is None or disabled.
    """
    s = settings
    if s is None or not s.enabled:
        return {}
    out = surface_sharpness(surface, metric=s.metric, radii=s.radii, thresholds=s.thresholds)
    if s.model and model is not None and data is not None:
        print(f"sharpness: epsilon- and adaptive sharpness, {model_passes(s)} passes over "
              f"{min(len(data), s.max_samples or len(data)):,} samples (sharpness.model=false skips this)", flush=True)
        t0 = time.perf_counter()
        out.update(model_sharpness(
            model, data, loss=loss, batch_size=s.batch_size, max_samples=s.max_samples, eps=float(s.eps),
            rho=float(s.rho), eta=float(s.eta), steps=s.steps, restarts=s.restarts, seed=s.seed,
            hessian=s.hessian, hessian_iters=s.hessian_iters, hessian_probes=s.hessian_probes, progress=progress))
        print(f"sharpness: done in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def ascent_passes(steps: int, restarts: int) -> int:
    """Passes over the data of the two ascents (epsilon and adaptive): each evaluates L(theta) once,
    then ``steps`` gradient steps and the final point per restart."""
    return 2 * ((int(steps) + 1) * int(restarts) + 1)


def model_passes(s: SharpnessSettings) -> int:
    """Passes over the data that the model-based measures take (the two ascents)."""
    return ascent_passes(s.steps, s.restarts)


def model_flatness(s: SharpnessSettings | None, model: nn.Module | None, data: Any, loss: str = "crossentropy") -> dict[str, Any]:
    """Gaussian and PAC-Bayes flatness (:mod:`landscape_exp.flatness`) of ``model`` on ``data`` (the
    training split) as ``summary["measures"]`` entries; ``{}`` when off or without model/data."""
    if s is None or not s.enabled or model is None or data is None:
        return {}
    from landscape_exp.flatness import flatness_measures

    fs = s.flatness
    if not (fs.gaussian or fs.pac_bayes):
        return {}
    n = min(len(data), s.max_samples or len(data))
    print(f"flatness: Gaussian/PAC-Bayes measures, about {fs.passes()} forward passes over {n:,} samples "
          "(sharpness.flatness.gaussian/pac_bayes=false skip them)", flush=True)
    t0 = time.perf_counter()
    out = flatness_measures(model, data, fs, loss=loss, batch_size=s.batch_size, max_samples=s.max_samples, seed=s.seed)
    print("flatness: " + ", ".join(f"{k} {v['value']:.4g}" for k, v in out.items())
          + f" ({time.perf_counter() - t0:.1f} s)", flush=True)
    return out
