"""Gaussian and PAC-Bayes flatness (landscape_exp.measures.flatness) against the closed forms of a quadratic
loss, and their behaviour under the ReLU rescaling that leaves a network's function unchanged."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape_exp.config.measures import FlatnessSettings
from landscape_exp.errors import UserError
from landscape_exp.measures.flatness import gaussian_sharpness, model_eval_fn, pac_bayes_sigma, t_interval
from landscape_exp.weights.params import select_parameters


def quadratic(d: int = 2000, seed: int = 0):
    """``L(w) = 1/2 (w - w*)^T H (w - w*)`` with a dense SPD ``H`` (eigenvalues in [1, 3]) and the
    loss as a function of the perturbation at ``w*``: ``delta -> 1/2 delta^T H delta``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    h = (q * (1.0 + 2.0 * torch.rand(d, generator=g, dtype=torch.float64))) @ q.T
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    return h, w_star, (lambda delta: float(0.5 * delta @ (h @ delta)))


def test_gaussian_sharpness_interval_covers_half_sigma2_trace():
    h, w, fn = quadratic(d=300)
    sigma = 0.1
    exact = 0.5 * sigma**2 * float(torch.trace(h))
    g = gaussian_sharpness(fn, w, sigma, samples=200, seed=3)
    assert g.ci_low <= exact <= g.ci_high, (g.ci_low, exact, g.ci_high)
    assert g.ci_high - g.ci_low < 0.05 * exact  # informative: each draw is 1/2 sigma^2 xi^T H xi
    assert g.base == 0.0 and len(g.diffs) == 200
    # the interval is scipy's Student-t interval of the draws
    lo, hi = __import__("scipy").stats.t.interval(0.95, 199, loc=g.diffs.mean(), scale=g.diffs.std(ddof=1) / math.sqrt(200))
    assert (g.ci_low, g.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    # magnitude-aware with eps = 0: E = 1/2 sigma^2 sum_i H_ii w_i^2
    gm = gaussian_sharpness(fn, w, sigma, samples=200, seed=3, magnitude=True)
    exact_m = 0.5 * sigma**2 * float((torch.diagonal(h) * w**2).sum())
    assert gm.ci_low <= exact_m <= gm.ci_high


def test_pac_bayes_sigma_of_a_quadratic_is_sqrt_2delta_over_trace():
    h, w, fn = quadratic()
    target = 0.05
    r = pac_bayes_sigma(fn, w, target, samples=20, seed=1, rel_tol=1e-4)
    exact = math.sqrt(2 * target / float(torch.trace(h)))
    assert r.sigma == pytest.approx(exact, rel=0.02)  # MC: xi^T H xi / tr H has relative sd ~ 0.7 % over 20 draws
    assert r.increase <= target and r.upper / r.sigma - 1 <= 1e-4
    # the estimate at sigma is 1/2 sigma^2 S with the same S for every sigma: the search is exact for it
    s_hat = 2 * r.increase / r.sigma**2
    assert r.sigma == pytest.approx(math.sqrt(2 * target / s_hat), rel=1e-4)
    rm = pac_bayes_sigma(fn, w, target, samples=20, seed=1, magnitude=True, rel_tol=1e-4)
    exact_m = math.sqrt(2 * target / float((torch.diagonal(h) * w**2).sum()))
    assert rm.sigma == pytest.approx(exact_m, rel=0.03)
    # started far above and far below: the same answer
    for start in (1e-6, 1e3):
        assert pac_bayes_sigma(fn, w, target, samples=20, seed=1, rel_tol=1e-4,
                               start=start).sigma == pytest.approx(r.sigma, rel=2e-4)


def relu_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).double()


def rescaled(net: nn.Module, c: float) -> nn.Module:
    """Layer 1 (weight and bias) times c, layer 2's weight divided by c: the same function (ReLU is
    positively homogeneous)."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        out[0].weight.mul_(c)
        out[0].bias.mul_(c)
        out[2].weight.div_(c)
    return out


def test_magnitude_aware_measures_are_rescaling_invariant_and_plain_ones_are_not():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (200,), generator=g)
    net = relu_net()
    other = rescaled(net, 5.0)
    assert torch.allclose(net(x), other(x), rtol=1e-12, atol=1e-12)
    batches = lambda: [(x[:128], y[:128]), (x[128:], y[128:])]  # noqa: E731
    values = {}
    for name, model in (("net", net), ("rescaled", other)):
        params = select_parameters(model)
        theta = params.vector()
        fn = model_eval_fn(model, params, batches, "crossentropy", "loss")
        values[name] = {
            "plain": gaussian_sharpness(fn, theta, 0.05, samples=8, seed=2).value,
            "mag": gaussian_sharpness(fn, theta, 0.2, samples=8, seed=2, magnitude=True, eps=0.0).value,
            "pb": pac_bayes_sigma(fn, theta, 0.1, samples=4, seed=2, rel_tol=1e-3).sigma,
            "pb_mag": pac_bayes_sigma(fn, theta, 0.1, samples=4, seed=2, magnitude=True, rel_tol=1e-3).sigma,
        }
    a, b = values["net"], values["rescaled"]
    # identical draws: the perturbed rescaled network is the rescaled perturbed one
    assert b["mag"] == pytest.approx(a["mag"], rel=1e-9) and a["mag"] > 0
    assert b["pb_mag"] == pytest.approx(a["pb_mag"], rel=1e-9)
    # the plain ones see the larger first layer and the smaller second layer differently
    assert abs(b["plain"] / a["plain"] - 1) > 0.2, (a["plain"], b["plain"])
    assert abs(b["pb"] / a["pb"] - 1) > 0.05, (a["pb"], b["pb"])
    # eps > 0 (Jiang et al.'s 1e-3 floor) breaks the invariance only slightly
    params = select_parameters(net)
    theta = params.vector()
    fn = model_eval_fn(net, params, batches, "crossentropy", "loss")
    with_eps = gaussian_sharpness(fn, theta, 0.2, samples=8, seed=2, magnitude=True, eps=1e-3).value
    assert with_eps == pytest.approx(a["mag"], rel=0.05)


def test_error_metric_and_refusals():
    net = relu_net()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (50,), generator=g)
    params = select_parameters(net)
    theta = params.vector()
    err = model_eval_fn(net, params, lambda: [(x, y)], "crossentropy", "error")
    assert err(torch.zeros_like(theta)) == pytest.approx(float((net(x).argmax(1) != y).double().mean()))
    with pytest.raises(UserError, match="samples=1 must be >= 2"):
        gaussian_sharpness(err, theta, 0.1, samples=1)
    with pytest.raises(UserError, match="sigma=-1"):
        gaussian_sharpness(err, theta, -1, samples=3)
    with pytest.raises(UserError, match="target=0"):
        pac_bayes_sigma(err, theta, 0)
    m, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2 < hi
    good = dict(gaussian=True, sigma=0.01, mag_sigma=0.05, samples=10, confidence=0.95, pac_bayes=False, target=0.1,
                metric="error", pac_bayes_samples=5, eps=1e-3, rel_tol=0.02)
    assert FlatnessSettings.from_mapping(good).passes() == 22
    with pytest.raises(UserError, match="metric='acc' must be one of: error, loss"):
        FlatnessSettings.from_mapping({**good, "metric": "acc"})
    with pytest.raises(UserError, match="unknown \\['sigmas'\\]"):
        FlatnessSettings.from_mapping({**good, "sigmas": 1})
    with pytest.raises(UserError, match="confidence=1.5"):
        FlatnessSettings.from_mapping({**good, "confidence": 1.5})
    assert np.isfinite(FlatnessSettings.from_mapping({**good, "pac_bayes": True}).passes())
