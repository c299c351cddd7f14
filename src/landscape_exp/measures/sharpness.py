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
``lambda_max`` and the trace of the Hessian come from :mod:`landscape_exp.hessian.spectral`.

Metrics are returned as flat ``{"sharpness/<name>": float}`` dicts (summary, W&B, CSV) and stored
in the surface file's ``sharpness`` attribute (JSON) by :func:`landscape_exp.surface.store.store_sharpness`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from torch import nn

from landscape_exp.config.measures import SharpnessSettings
from landscape_exp.measures.ascent import ascent_passes, model_sharpness
from landscape_exp.measures.surface_shape import surface_sharpness

PREFIX = "sharpness/"

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


def model_passes(s: SharpnessSettings) -> int:
    """Passes over the data that the model-based measures take (the two ascents)."""
    return ascent_passes(s.steps, s.restarts)


def model_flatness(s: SharpnessSettings | None, model: nn.Module | None, data: Any, loss: str = "crossentropy") -> dict[str, Any]:
    """Gaussian and PAC-Bayes flatness (:mod:`landscape_exp.measures.flatness`) of ``model`` on ``data`` (the
    training split) as ``summary["measures"]`` entries; ``{}`` when off or without model/data."""
    if s is None or not s.enabled or model is None or data is None:
        return {}
    from landscape_exp.measures.flatness import flatness_measures

    fs = s.flatness
    if not (fs.gaussian or fs.pac_bayes):
        return {}
    n = min(len(data), s.max_samples or len(data))
    print(f"flatness: Gaussian/PAC-Bayes measures, about {fs.passes()} forward passes over {n:,} samples "
          "(sharpness.flatness.gaussian/pac_bayes=false skip them)", flush=True)
    t0 = time.perf_counter()
    out = flatness_measures(model, data, fs, loss=loss, batch_size=s.batch_size, max_samples=s.max_samples, seed=s.seed)
    print("flatness: " + ", ".join(f"{k} {v.value:.4g}" for k, v in out.items())
          + f" ({time.perf_counter() - t0:.1f} s)", flush=True)
    return out
