"""Sharpness metrics against closed forms: quadratics on grids, exactly quadratic models
(least squares at its optimum), brute force over the vertices of the box, exact Hessians,
and the ReLU rescaling that adaptive sharpness must not see."""

from __future__ import annotations

import itertools
import json
import math

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from landscape_exp.config.measures import SharpnessSettings
from landscape_exp.errors import UserError
from landscape_exp.measures.ascent import (
    adaptive_sharpness,
    ball_ascent,
    box_ascent,
    epsilon_sharpness,
    hessian_sharpness,
    model_sharpness,
)
from landscape_exp.measures.sharpness import sharpness_summary
from landscape_exp.measures.surface_shape import (
    basin_area_2d,
    basin_interval,
    basin_radii_2d,
    basin_width,
    basin_width_2d,
    loss_rise_2d,
    loss_rise_at_radii,
    surface_sharpness,
)
from landscape_exp.surface.store import read_sharpness, store_sharpness

F64 = torch.float64


# ------------------------------------------------------------------------------ 1D surfaces
def test_1d_rise_and_width_of_a_quadratic():
    c, h = 3.0, 0.01
    x = np.linspace(-1, 1, 201)
    f = c * x**2
    rise = loss_rise_at_radii(x, f, (0.1, 0.25, 0.5, 1.0))
    for r, v in rise.items():  # grid nodes: exact
        assert v == pytest.approx(c * r * r, abs=1e-12)
    # between nodes, linear interpolation of c a^2 overestimates by at most c h^2 / 4
    r = 0.1234
    v = loss_rise_at_radii(x, f, [r])[r]
    assert c * r * r <= v <= c * r * r + c * h * h / 4 + 1e-12
    for t in (0.03, 0.3, 1.2):
        lo, hi, closed = basin_interval(x, f, t)
        w = 2 * math.sqrt(t / c)
        assert closed
        assert hi == pytest.approx(w / 2, abs=c * h * h) and lo == pytest.approx(-w / 2, abs=c * h * h)
        assert basin_width(x, f, t) == pytest.approx(w, abs=2 * c * h * h)


def test_1d_asymmetric_open_and_off_grid():
    x = np.linspace(-1, 1, 401)
    c1, c2 = 2.0, 8.0  # steeper on the left
    f = np.where(x > 0, c1 * x**2, c2 * x**2) + 0.5
    lo, hi, closed = basin_interval(x, f, 0.5)
    assert closed and hi == pytest.approx(math.sqrt(0.5 / c1), abs=1e-4) and lo == pytest.approx(-math.sqrt(0.5 / c2), abs=1e-4)
    assert loss_rise_at_radii(x, f, [0.5])[0.5] == pytest.approx((c1 + c2) / 2 * 0.25, abs=1e-12)
    # a basin wider than the grid is open, and its width is the grid's length (a lower bound)
    lo, hi, closed = basin_interval(x, f, 100.0)
    assert not closed and (lo, hi) == (-1.0, 1.0)
    # radii beyond the grid are NaN, not extrapolated
    assert math.isnan(loss_rise_at_radii(x, f, [1.5])[1.5])
    # no grid point at 0: the centre is interpolated
    x2 = np.linspace(-1, 1, 200)
    assert loss_rise_at_radii(x2, 3 * x2**2, [0.5])[0.5] == pytest.approx(0.75, abs=3 * (x2[1] - x2[0]) ** 2)


def test_1d_nonfinite_points_end_the_basin():
    x = np.linspace(-1, 1, 21)
    f = 0.1 * x**2
    f[15] = np.inf  # x = 0.5 diverged
    lo, hi, closed = basin_interval(x, f, 10.0)
    assert hi == pytest.approx(0.4) and lo == -1.0 and not closed  # open to the left


# ------------------------------------------------------------------------------ 2D surfaces
def _grid2(n: int = 101):
    x = np.linspace(-1, 1, n)
    y = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(x, y)  # z[j, i] = f(x_i, y_j)
    return x, y, xx, yy


def test_2d_isotropic_quadratic():
    c = 3.0
    x, y, xx, yy = _grid2()
    z = c * (xx**2 + yy**2)
    h = x[1] - x[0]
    for r, v in loss_rise_2d(x, y, z, (0.1, 0.25, 0.5, 1.0)).items():
        assert v == pytest.approx(c * r * r, abs=c * h * h / 2)
    t = 0.3
    width, closed = basin_width_2d(x, y, z, t)
    assert closed and width == pytest.approx(2 * math.sqrt(t / c), rel=2e-3)
    area, aclosed = basin_area_2d(x, y, z, t)
    assert aclosed and area == pytest.approx(math.pi * t / c, rel=1e-2)


def test_2d_anisotropic_quadratic_against_per_ray_closed_form():
    c1, c2, t = 2.0, 6.0, 0.4
    x, y, xx, yy = _grid2()
    z = c1 * xx**2 + c2 * yy**2 + 1.0
    r = 0.6
    # mean over the circle of c1 r^2 cos^2 + c2 r^2 sin^2
    assert loss_rise_2d(x, y, z, [r])[r] == pytest.approx(r * r * (c1 + c2) / 2, rel=2e-3)
    radii, closed = basin_radii_2d(x, y, z, t, n_angles=64)
    th = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    exact = np.sqrt(t / (c1 * np.cos(th) ** 2 + c2 * np.sin(th) ** 2))
    assert closed.all()
    np.testing.assert_allclose(radii, exact, rtol=3e-3)
    area, _ = basin_area_2d(x, y, z, t)
    assert area == pytest.approx(math.pi * t / math.sqrt(c1 * c2), rel=1e-2)  # an ellipse


def test_2d_area_counts_only_the_centres_basin_and_open_basins():
    x, y, xx, yy = _grid2()
    c, t = 10.0, 0.4
    z = np.minimum(c * (xx**2 + yy**2), c * ((xx - 0.6) ** 2 + yy**2))  # a second well at (0.6, 0)
    area, closed = basin_area_2d(x, y, z, t)
    assert closed and area == pytest.approx(math.pi * t / c, rel=1e-2)  # one disc, not two
    area, closed = basin_area_2d(x, y, 0.01 * (xx**2 + yy**2), t)
    assert not closed and area == pytest.approx(4.0)  # the whole grid
    assert not basin_width_2d(x, y, 0.01 * (xx**2 + yy**2), t)[1]


def test_surface_sharpness_keys_and_done_mask():
    x, y, xx, yy = _grid2(41)
    z = 2.0 * (xx**2 + yy**2)
    done = np.ones_like(z, dtype=bool)
    s = surface_sharpness({"x": x, "y": y, "train_loss": z, "done": done}, radii=[0.5], thresholds=[0.5])
    assert set(s) == {"sharpness/rise_r0.5", "sharpness/width_t0.5", "sharpness/area_t0.5", "sharpness/basin_open_t0.5"}
    assert s["sharpness/rise_r0.5"] == pytest.approx(0.5, rel=1e-2)
    assert s["sharpness/width_t0.5"] == pytest.approx(2 * math.sqrt(0.25), rel=1e-2)
    assert s["sharpness/basin_open_t0.5"] == 0.0
    # a point not computed yet (-1 in the file) must not pass for a low loss
    z2 = z.copy()
    z2[20, 30] = -1.0  # (x, y) = (0.5, 0): on the circle of radius 0.5
    done[20, 30] = False
    s2 = surface_sharpness({"x": x, "y": y, "train_loss": z2, "done": done}, radii=[0.5], thresholds=[0.5])
    assert math.isnan(s2["sharpness/rise_r0.5"])
    s1 = surface_sharpness({"x": x, "y": None, "train_loss": 2 * x**2, "done": np.ones_like(x, bool)},
                           radii=[0.25], thresholds=[0.5])
    assert s1 == pytest.approx({"sharpness/rise_r0.25": 0.125, "sharpness/width_t0.5": 1.0,
                                "sharpness/basin_open_t0.5": 0.0}, abs=1e-3)
    with pytest.raises(UserError, match="test_loss"):
        surface_sharpness({"x": x, "y": None, "train_loss": x}, metric="test_loss")
    # no metric named: the training loss, else the test loss
    auto = surface_sharpness({"x": x, "y": None, "test_loss": 2 * x**2}, metric=None, radii=[0.25], thresholds=[0.5])
    assert auto["sharpness/rise_r0.25"] == pytest.approx(0.125, abs=1e-3)


# ------------------------------------------------------------------------------ ascent on tensors
def test_ball_ascent_on_a_quadratic_reaches_rho2_lambda_max():
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=F64))
    evals = torch.tensor([5.0, 2.0, 1.5, 1.0, 0.5, 0.2, 0.1, 0.0], dtype=F64)
    H = q @ torch.diag(evals) @ q.T
    T = torch.rand(8, generator=g, dtype=F64) + 0.5
    rho = 0.05

    def f(d):
        return 0.5 * d @ H @ d, H @ d

    val, delta = ball_ascent(f, T, rho, steps=60)
    lam = torch.linalg.eigvalsh(T[:, None] * H * T[None, :])[-1]
    assert val == pytest.approx(rho**2 / 2 * float(lam), rel=1e-6)
    assert float((delta / T).norm()) <= rho * (1 + 1e-12)  # feasible


def test_box_ascent_on_a_separable_quadratic():
    b = torch.tensor([0.1, 0.3, 0.2, 0.05], dtype=F64)
    Hd = torch.tensor([1.0, 4.0, 0.5, 2.0], dtype=F64)

    def f(d):
        return 0.5 * (Hd * d * d).sum(), Hd * d

    val, delta = box_ascent(f, b)
    assert val == pytest.approx(0.5 * float((Hd * b * b).sum()), rel=1e-12)
    assert bool((delta.abs() <= b).all())


# ------------------------------------------------------------------------------ exact quadratic models
def _least_squares(n: int = 200, p: int = 5, correlated: bool = True, orthogonal: bool = False, seed: int = 0):
    """Linear regression at its least-squares optimum: L(w + d) - L(w) = d^T A d, A = X^T X / n."""
    g = torch.Generator().manual_seed(seed)
    if orthogonal:
        q, _ = torch.linalg.qr(torch.randn(n, p, generator=g, dtype=F64))
        s = torch.linspace(0.5, 2.0, p, dtype=F64)
        X = q * s * math.sqrt(n)  # A = diag(s^2)
    else:
        X = torch.rand(n, p, generator=g, dtype=F64)
        if correlated:
            X = X + 0.5 * torch.rand(n, 1, generator=g, dtype=F64)
    y = X @ torch.randn(p, generator=g, dtype=F64) + 0.1 * torch.randn(n, generator=g, dtype=F64)
    w = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)
    model = nn.Linear(p, 1, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(w.view(1, -1))
    batches = [(X[:70], y[:70]), (X[70:], y[70:])]

    def loss_fn(out, t):
        return ((out.squeeze(-1) - t) ** 2).mean()

    return model, batches, loss_fn, X, y, w


def _vertex_max(A: torch.Tensor, b: torch.Tensor) -> float:
    best = -math.inf
    for s in itertools.product((-1.0, 1.0), repeat=b.numel()):
        d = torch.tensor(s, dtype=F64) * b
        best = max(best, float(d @ A @ d))
    return best


def test_epsilon_sharpness_equals_vertex_brute_force():
    model, batches, loss_fn, X, y, w = _least_squares()
    A = X.T @ X / X.shape[0]
    L0 = float(((X @ w - y) ** 2).mean())
    eps = 1e-3
    res = epsilon_sharpness(model, batches, loss_fn, eps=eps)
    best = _vertex_max(A, eps * (w.abs() + 1))  # a convex function's max over a box is at a vertex
    assert res.base_loss == pytest.approx(L0, rel=1e-12)
    assert res.value == pytest.approx(100 * best / (1 + L0), rel=1e-8)
    # in general (uncorrelated features, local maxima among vertices) it stays a lower bound
    model, batches, loss_fn, X, y, w = _least_squares(correlated=False, seed=5)
    A = X.T @ X / X.shape[0]
    L0 = float(((X @ w - y) ** 2).mean())
    res = epsilon_sharpness(model, batches, loss_fn, eps=eps)
    assert 0 < res.value <= 100 * _vertex_max(A, eps * (w.abs() + 1)) / (1 + L0) * (1 + 1e-9)


def test_adaptive_sharpness_equals_rho2_lambda_max_of_scaled_hessian():
    model, batches, loss_fn, X, y, w = _least_squares()
    H = 2 * X.T @ X / X.shape[0]
    rho, eta = 0.05, 0.01
    T = w.abs() + eta
    expect = rho**2 / 2 * float(torch.linalg.eigvalsh(T[:, None] * H * T[None, :])[-1])
    assert adaptive_sharpness(model, batches, loss_fn, rho=rho, eta=eta, steps=50).value == pytest.approx(expect, rel=1e-7)
    assert adaptive_sharpness(model, batches, loss_fn, rho=rho, eta=eta).value == pytest.approx(expect, rel=1e-2)


def test_hessian_sharpness_exact_on_a_diagonal_hessian():
    model, batches, loss_fn, X, y, w = _least_squares(orthogonal=True)
    H = 2 * X.T @ X / X.shape[0]
    out = hessian_sharpness(model, batches, loss_fn, X.shape[0], iters=5, probes=4)
    assert out["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)
    assert out["trace"] == pytest.approx(float(torch.trace(H)), rel=1e-8)  # Rademacher: exact for diagonal H


# ------------------------------------------------------------------------------ scale invariance
def test_adaptive_sharpness_is_invariant_to_relu_rescaling_and_epsilon_is_not():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(64, 4, dtype=F64)
    t = torch.randint(0, 3, (64,))
    batches = [(x[:40], t[:40]), (x[40:], t[40:])]
    loss_fn = nn.functional.cross_entropy
    c = 5.0
    scaled = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        scaled[0].weight.copy_(c * net[0].weight)
        scaled[0].bias.copy_(c * net[0].bias)
        scaled[2].weight.copy_(net[2].weight / c)
        scaled[2].bias.copy_(net[2].bias)
    torch.testing.assert_close(scaled(x), net(x), rtol=1e-12, atol=1e-12)  # the same function

    a0 = adaptive_sharpness(net, batches, loss_fn, rho=0.1, eta=0.0, steps=5)
    a1 = adaptive_sharpness(scaled, batches, loss_fn, rho=0.1, eta=0.0, steps=5)
    assert a0.value > 1e-4
    assert a1.value == pytest.approx(a0.value, rel=1e-9)
    e0 = epsilon_sharpness(net, batches, loss_fn, eps=1e-2, steps=5)
    e1 = epsilon_sharpness(scaled, batches, loss_fn, eps=1e-2, steps=5)
    assert abs(e1.value - e0.value) > 0.1 * e0.value
    # the model's own weights are left as they were
    torch.testing.assert_close(scaled(x), net(x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ on real data
def test_model_sharpness_on_digits(digits):
    from landscape_exp.data.device import DeviceData
    from landscape_exp.engine.evaluation import evaluate
    from landscape_exp.models import build_model

    from conftest import mlp_cfg

    torch.manual_seed(0)
    model = build_model(mlp_cfg()).eval()
    data = DeviceData(digits.train, digits.mean, digits.std, "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    out = model_sharpness(model, data, batch_size=300, steps=3, hessian=True, hessian_iters=5, hessian_probes=2)
    assert set(out) == {"sharpness/epsilon", "sharpness/adaptive", "sharpness/base_loss",
                        "sharpness/lambda_max", "sharpness/trace"}
    assert out["sharpness/base_loss"] == pytest.approx(evaluate(model, data)[0], rel=1e-5)
    assert out["sharpness/epsilon"] > 0 and out["sharpness/adaptive"] > 0 and out["sharpness/lambda_max"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    sub = model_sharpness(model, data, max_samples=100, steps=0)
    assert sub["sharpness/base_loss"] == pytest.approx(evaluate(model, DeviceData(digits.train.subset(torch.arange(100)),
                                                                                 digits.mean, digits.std, "cpu"))[0], rel=1e-5)


# ------------------------------------------------------------------------------ config and file
def sharpness_conf(group: str = "default", **overrides) -> dict:
    """The resolved ``sharpness=<group>`` config with ``sharpness.<key>=<value>`` overrides."""
    from conftest import CONF_DIR

    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "sharpness" / f"{group}.yaml"), overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def settings(group: str = "default", **overrides) -> SharpnessSettings:
    return SharpnessSettings.from_mapping(sharpness_conf(group, **overrides))


def test_settings_and_summary_switches():
    with pytest.raises(UserError, match="unknown sharpness setting"):
        settings(radius=[0.1])
    with pytest.raises(UserError, match="radii"):
        settings(radii=[0.1, -1])
    x = np.linspace(-1, 1, 11)
    surf = {"x": x, "y": None, "train_loss": x**2, "done": np.ones(11, bool)}
    assert sharpness_summary(surf, settings("none")) == {}
    assert sharpness_summary(surf, None) == {}
    assert set(sharpness_summary(surf, settings(radii=[0.2], thresholds=[0.1]))) == {
        "sharpness/rise_r0.2", "sharpness/width_t0.1", "sharpness/basin_open_t0.1"}


def test_settings_fields_are_the_yaml_keys_and_hold_no_defaults():
    import dataclasses

    fields = dataclasses.fields(SharpnessSettings)
    assert [f.name for f in fields] == list(sharpness_conf())
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    s = settings()
    assert s.enabled and s.radii == (0.1, 0.25, 0.5, 1.0) and s.thresholds == (0.1, 1.0) and s.eps == 1e-3
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3  # type: ignore[misc]
    explicit = SharpnessSettings(**{**sharpness_conf(), "radii": [0.5], "steps": 2})
    assert explicit.radii == (0.5,) and explicit == settings(radii=[0.5], steps=2)


def test_disabled_settings_need_nothing_else():
    off = settings("none")
    assert off.enabled is False and off.radii is None
    assert SharpnessSettings.from_mapping({**sharpness_conf(), "enabled": False}).enabled is False
    with pytest.raises(UserError, match="unknown sharpness setting.*radius"):
        settings("none", radius=1)
    with pytest.raises(UserError, match="sharpness.enabled"):
        SharpnessSettings.from_mapping({})
    with pytest.raises(UserError, match="sharpness.enabled='no' must be true or false"):
        settings("none", enabled="no")


@pytest.mark.parametrize(("key", "value", "match"), [
    ("enabled", "yes", r"sharpness.enabled='yes' must be true or false"),
    ("metric", 3, r"sharpness.metric=3 must be"),
    ("radii", 0.5, r"sharpness.radii=0.5 must be a list of positive numbers"),
    ("thresholds", ["a"], r"sharpness.thresholds=\['a'\] must be a list"),
    ("thresholds", [0.1, 0.0], r"thresholds must be positive numbers; got 0.0"),
    ("model", 1, r"sharpness.model=1 must be true or false"),
    ("eps", 0, r"sharpness.eps=0 must be a positive number"),
    ("rho", float("inf"), r"sharpness.rho=inf must be a positive number"),
    ("eta", -0.1, r"sharpness.eta=-0.1 must be a number >= 0"),
    ("steps", -1, r"sharpness.steps=-1 must be an integer >= 0"),
    ("restarts", 0, r"sharpness.restarts=0 must be an integer >= 1"),
    ("batch_size", 2.5, r"sharpness.batch_size=2.5 must be an integer >= 1"),
    ("max_samples", 0, r"sharpness.max_samples=0 must be an integer >= 1 or null"),
    ("hessian", "no", r"sharpness.hessian='no' must be true or false"),
    ("hessian_iters", 0, r"sharpness.hessian_iters=0 must be an integer >= 1"),
    ("hessian_probes", True, r"sharpness.hessian_probes=True must be an integer >= 1"),
    ("seed", "0", r"sharpness.seed='0' must be an integer"),
])
def test_bad_settings_are_one_line_errors(key, value, match):
    with pytest.raises(UserError, match=match) as e:
        settings(**{key: value})
    assert "\n" not in str(e.value)


def test_missing_setting_is_named():
    conf = sharpness_conf()
    del conf["rho"]
    with pytest.raises(UserError, match=r"no sharpness.rho") as e:
        SharpnessSettings.from_mapping(conf)
    assert "\n" not in str(e.value)


def test_store_sharpness_in_surface_file(tmp_path):
    from landscape_exp.surface.grid import parse_grid
    from landscape_exp.surface.store import SurfaceFile, read_surface

    grid = parse_grid("-1:1:5")
    path = tmp_path / "surface.h5"
    with SurfaceFile(path, grid, ["train_loss", "train_acc"], fingerprint={"a": 1}, attrs={"model": "mlp"}) as s:
        for k in range(grid.size):
            s.record(k, {"train_loss": float(grid.point(k)[0] ** 2), "train_acc": 50.0})
    surf = read_surface(path)
    metrics = surface_sharpness(surf, radii=[0.5], thresholds=[0.2])
    assert store_sharpness(path, metrics)
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs["sharpness"]) == metrics
        assert f.attrs["model"] == "mlp" and f["train_loss"][2] == 0.0  # the rest is intact
    assert read_sharpness(read_surface(path)) == metrics
    assert read_sharpness({"attrs": {}}) == {}
    # a surface being written by another process is left alone
    import fcntl
    import os

    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT)  # another writer takes the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert store_sharpness(path, {"sharpness/x": 1.0}) is False
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert read_sharpness(read_surface(path)) == metrics
