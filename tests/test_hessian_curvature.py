"""Curvature you can trust: residuals and converged flags, the bottom of the spectrum at a trained
minimum, the bulk/outlier split, Gauss-Newton and empirical-Fisher products, per-layer block
spectra and the subspace measures, each against an exact, independently built matrix.

The references never go through the library's operators: the Hessian is
``torch.autograd.functional.hessian`` of the loss as a function of one flat float64 parameter
vector, the GGN is ``sum_n J_n^T (diag p_n - p_n p_n^T) J_n / N`` from
``torch.autograd.functional.jacobian``, the empirical Fisher the mean of per-sample gradient outer
products from a loop over samples, and spectra come from ``numpy``/``torch.linalg.eigh``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape_exp import hessian as H
from landscape_exp.config.hessian import SpectrumSettings
from landscape_exp.data.datasets import load_dataset
from landscape_exp.data.device import DeviceData
from landscape_exp.errors import UserError
from landscape_exp.hessian import density, spectral
from landscape_exp.hessian.operators import FisherOperator, GaussNewtonOperator, HessianOperator
from landscape_exp.models import build_model
from landscape_exp.weights.params import flatten, select_parameters, unflatten

from conftest import DIGITS_CFG, mlp_cfg


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def eigvalsh(m) -> np.ndarray:
    """Ascending eigenvalues of a symmetric matrix (torch's LAPACK: numpy's is up to 20x slower
    under this suite's thread settings)."""
    return torch.linalg.eigvalsh(torch.as_tensor(np.asarray(m))).numpy()


def _digits_inputs(ds) -> tuple[torch.Tensor, torch.Tensor]:
    tr = ds.train
    mean = torch.tensor(ds.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float64).view(1, -1, 1, 1)
    return (tr.images.double() / 255.0 - mean) / std, tr.targets


@pytest.fixture(scope="module")
def minimum():
    """An MLP 64-16-10 trained on ALL 1,438 digits training images to (near) a minimum of the
    cross-entropy + 1e-3 |theta|^2 (100 full-batch L-BFGS steps in float64, well under a second),
    then rounded to float32 for the library; its exact full-data Hessian w.r.t. the 1,184 weights.
    The smallest eigenvalues form a dense cluster near zero: gaps of 2e-6 to 4e-4 lambda_max."""
    ds = load_dataset(dict(DIGITS_CFG))
    X, y = _digits_inputs(ds)
    torch.manual_seed(0)
    m64 = build_model(mlp_cfg()).double()
    opt = torch.optim.LBFGS(m64.parameters(), lr=1, max_iter=100, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(m64(X), y) + 1e-3 * sum((p ** 2).sum() for p in m64.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    model = build_model(mlp_cfg()).eval()
    model.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    m64.load_state_dict(model.state_dict())  # the reference sees exactly the float32 weights
    m64.eval()
    named = [(n, p.detach()) for n, p in m64.named_parameters() if p.dim() > 1]
    sizes = [p.numel() for _, p in named]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        ps = {n: part.view(p.shape) for (n, p), part in zip(named, flat.split(sizes))}
        return F.cross_entropy(functional_call(m64, ps, (X,)), y)

    flat = torch.cat([p.reshape(-1) for _, p in named])
    Hm = torch.autograd.functional.hessian(loss_of, flat, vectorize=True).numpy()
    evals, evecs = (t.numpy() for t in torch.linalg.eigh(torch.from_numpy(Hm)))  # torch's LAPACK: 10x faster here
    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    sel = select_parameters(model, "biasbn")
    op = H.make_operator(model, sel, data, batch_size=512)  # 1438 = 512 + 512 + 414
    return {"model": model, "op": op, "sel": sel, "data": data, "H": Hm, "evals": evals, "evecs": evecs}


def _exact_residuals(Hm: np.ndarray, values: np.ndarray, vectors: torch.Tensor) -> np.ndarray:
    V = vectors.double().numpy()
    return np.linalg.norm(Hm @ V.T - V.T * values, axis=0)


# ----------------------------------------------------------------------------- the bottom at a minimum


def test_bottom_of_the_spectrum_at_a_trained_minimum(minimum):
    ev, U, Hm = minimum["evals"], minimum["evecs"], minimum["H"]
    lmax = ev[-1]
    gaps = np.diff(ev[:8]) / lmax
    # The premise: a dense near-zero cluster (a residual of 1e-4 lambda_max cannot order it).
    assert abs(ev[0]) < 0.01 * lmax and gaps.max() < 1e-3 and gaps.min() < 1e-5, gaps
    r = H.spectrum_report(minimum["op"], SpectrumSettings(k=5, trace_probes=0, density_probes=0))  # tol 1e-5
    # In order, none skipped: each of the 5 smallest within 1e-6 lambda_max (far inside the
    # 1e-4 asked for and below the gaps), and the 5 vectors span the exact bottom-5 eigenspace.
    np.testing.assert_allclose(r.bottom.values, ev[:5], rtol=0, atol=1e-6 * lmax)
    np.testing.assert_allclose(r.top.values, ev[::-1][:5], rtol=0, atol=1e-6 * lmax)
    for vecs, idx in ((r.bottom.vectors, slice(0, 5)), (r.top.vectors, slice(-5, None))):
        sv = np.linalg.svd(vecs.double().numpy() @ U[:, idx], compute_uv=False)
        assert sv.min() > 0.9999, sv
    # Residuals as the exact Hessian gives them (the stored vectors are float32), all converged.
    for ps in (r.top, r.bottom):
        np.testing.assert_allclose(ps.residuals, _exact_residuals(Hm, ps.values, ps.vectors), rtol=0, atol=2e-7 * lmax)
        assert ps.converged.all() and (ps.residuals <= 1e-5 * ps.scale).all() and ps.tol == 1e-5
    assert r.bottom.scale == pytest.approx(lmax - ev[0], rel=1e-6) and r.top.scale == pytest.approx(lmax, rel=1e-6)
    conv = r.convergence()
    assert conv.converged and conv.num_pairs == 10 and conv.line().startswith("all 10 eigenpairs converged")


def test_unconverged_pairs_say_so_and_their_residuals_bound_the_error(minimum):
    ev, Hm = minimum["evals"], minimum["H"]
    r = H.spectrum_report(minimum["op"], SpectrumSettings(k=5, max_iter=6, trace_probes=0, density_probes=0))
    assert not r.bottom.converged.any()  # 6 Lanczos steps cannot reach 1e-5 of the spread
    assert not r.convergence().converged
    # The flags are honest: the values really are wrong (lambda_min reported far above the exact) ...
    assert r.bottom.values[0] - ev[0] > 1e-3 * ev[-1]
    # ... the residuals are the true ones and each value lies within its residual of an eigenvalue,
    # and the k-th smallest Ritz value is an upper bound of the k-th smallest eigenvalue.
    for ps in (r.top, r.bottom):
        np.testing.assert_allclose(ps.residuals, _exact_residuals(Hm, ps.values, ps.vectors), rtol=1e-5, atol=1e-7 * ev[-1])
        dist = np.abs(ps.values[:, None] - ev[None, :]).min(axis=1)
        assert (dist <= ps.residuals * (1 + 1e-6) + 1e-7 * ev[-1]).all()
    assert (r.bottom.values >= ev[:5] - 1e-7 * ev[-1]).all() and (r.top.values <= ev[::-1][:5] + 1e-7 * ev[-1]).all()
    line = r.convergence().line()
    assert line.startswith("WARNING:") and "did NOT converge" in line and "bottom 1" in line and "\n" not in line
    # What W&B gets (ctx.tracker.log) and what summary.json gets say the same.
    m, summ = H.report_metrics(r), H.report_summary(r)
    assert m["hessian/converged"] == 0.0 and m["hessian/num_unconverged"] == 10 - int(r.top.converged.sum())
    assert m["hessian/bottom_residual/1"] == r.bottom.residuals[0] and m["hessian/bottom_converged/1"] == 0.0
    assert summ["converged"] is False and summ["bottom_residuals"] == r.bottom.residuals.tolist()
    assert summ["bottom_converged"] == [False] * 5 and "bottom 5" in summ["unconverged_pairs"]


def test_bulk_edge_and_outliers_against_the_exact_spectrum(minimum):
    ev = minimum["evals"]
    dim, lmax = len(ev), ev[-1]
    r = H.spectrum_report(minimum["op"], SpectrumSettings(k=1, trace_probes=0, density_probes=2, density_iters=80,
                                                            bottom=False))
    exact = density.bulk_split(torch.from_numpy(ev), torch.full((dim,), 1.0 / dim), dim)
    b = r.bulk
    assert b is not None and "bulk edge" in b.rule
    # The same rule on the SLQ density and on the exact spectrum: edges within one kernel width,
    # and the outliers counted from the Ritz values are the exact eigenvalues above the edge.
    assert abs(b.edge - exact.edge) <= b.width, (b.edge, exact.edge, b.width)
    assert abs(b.num_outliers - int((ev > b.edge).sum())) <= 1, (b.per_probe, int((ev > b.edge).sum()))
    assert 0.02 * lmax < b.edge < 0.2 * lmax and 5 <= b.num_outliers <= 20  # digits: about C = 10 outliers
    assert len(b.per_probe) == 2 and exact.num_outliers == int((ev > exact.edge).sum())
    # A spectrum too small for a bulk: no edge, no outliers.
    tiny = density.bulk_split(torch.tensor([0.0, 1.0, 2.0]), torch.full((3,), 1 / 3), 3)
    assert math.isnan(tiny.edge) and tiny.num_outliers == 0


# ----------------------------------------------------------------------------- GGN and Fisher


def _tiny(loss: str = "crossentropy"):
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    return model, X, y


def _dense(op: HessianOperator) -> torch.Tensor:
    eye = torch.eye(op.dim, dtype=torch.float64)
    return torch.stack([op.matvec(eye[i]) for i in range(op.dim)])


def _mse(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (F.softmax(z, dim=1) - F.one_hot(t, z.shape[1]).to(z.dtype)).pow(2).mean(dim=1)


@pytest.mark.parametrize("loss", ["crossentropy", "mse"])
def test_gauss_newton_equals_exact_jt_hout_j(loss):
    model, X, y = _tiny()
    names, like = [n for n, _ in model.named_parameters()], [p.detach() for p in model.parameters()]
    per_sample = (lambda z, t: F.cross_entropy(z, t, reduction="none")) if loss == "crossentropy" else _mse
    J = torch.autograd.functional.jacobian(lambda f: functional_call(model, dict(zip(names, unflatten(f, like))), (X,)),
                                           flatten(like))  # (N, C, P)
    z = model(X).detach()
    G = torch.zeros(J.shape[2], J.shape[2], dtype=torch.float64)
    for n in range(len(y)):  # H_out of each sample's loss w.r.t. its logits, exact
        h_out = torch.autograd.functional.hessian(lambda zz, n=n: per_sample(zz[None], y[n:n + 1]).sum(), z[n])
        G += J[n].T @ h_out @ J[n] / len(y)
    if loss == "crossentropy":  # the closed form diag(p) - p p^T
        p = F.softmax(z, dim=1)
        G2 = sum(J[n].T @ (torch.diag(p[n]) - torch.outer(p[n], p[n])) @ J[n] for n in range(len(y))) / len(y)
        torch.testing.assert_close(G, G2, rtol=1e-10, atol=1e-12)
    batches = [(X[i:i + 16], y[i:i + 16]) for i in range(0, 40, 16)]
    op = GaussNewtonOperator(model, list(model.parameters()), batches, lambda zz, t: per_sample(zz, t).mean(), 40)
    torch.testing.assert_close(_dense(op), G, rtol=1e-10, atol=1e-12)
    res = spectral.top_eigenpairs(op, op.dim, 3, options=spectral.SolverOptions(tol=1e-10),
                                  generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(res.values.numpy(), eigvalsh(G.numpy())[::-1][:3], rtol=1e-8)
    assert res.all_converged
    if loss == "crossentropy":
        assert eigvalsh(G.numpy()).min() > -1e-12  # PSD, unlike the Hessian here
        Hm = torch.autograd.functional.hessian(
            lambda f: F.cross_entropy(functional_call(model, dict(zip(names, unflatten(f, like))), (X,)), y), flatten(like))
        assert eigvalsh(Hm.numpy()).min() < -1e-3


def test_gauss_newton_of_a_linear_model_is_its_hessian():
    g = torch.Generator().manual_seed(5)
    model = nn.Linear(6, 4).double().eval()
    X, y = torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (30,), generator=g)
    params = list(model.parameters())
    hop = HessianOperator(model, params, [(X, y)], F.cross_entropy, 30)
    gop = GaussNewtonOperator(model, params, [(X[:7], y[:7]), (X[7:], y[7:])], F.cross_entropy, 30)
    torch.testing.assert_close(_dense(gop), _dense(hop), rtol=1e-10, atol=1e-12)


def test_empirical_fisher_is_the_mean_of_gradient_outer_products():
    model, X, y = _tiny()
    params = list(model.parameters())
    grads = torch.stack([flatten(torch.autograd.grad(F.cross_entropy(model(X[n:n + 1]), y[n:n + 1]), params))
                         for n in range(len(y))])
    Fm = grads.T @ grads / len(y)
    op = FisherOperator(model, params, [(X[:25], y[:25]), (X[25:], y[25:])], F.cross_entropy, 40,
                        lambda z, t: F.cross_entropy(z, t, reduction="none"))
    torch.testing.assert_close(_dense(op), Fm, rtol=1e-10, atol=1e-12)
    res = spectral.top_eigenpairs(op, op.dim, 2, options=spectral.SolverOptions(tol=1e-10),
                                  generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(res.values.numpy(), eigvalsh(Fm.numpy())[::-1][:2], rtol=1e-8)
    # gradient() and loss() are those of the loss, whatever the curvature.
    torch.testing.assert_close(op.gradient(), grads.mean(0), rtol=1e-10, atol=1e-12)
    bad = FisherOperator(model, params, [(X, y)], F.cross_entropy, 40, F.cross_entropy)  # a mean, not per sample
    with pytest.raises(UserError, match="one loss per sample"):
        bad.matvec(torch.ones(op.dim, dtype=torch.float64))


# ----------------------------------------------------------------------------- blocks and subspaces


def test_block_spectra_are_the_exact_diagonal_blocks():
    model, X, y = _tiny()
    names, like = [n for n, _ in model.named_parameters()], [p.detach() for p in model.parameters()]
    Hm = torch.autograd.functional.hessian(
        lambda f: F.cross_entropy(functional_call(model, dict(zip(names, unflatten(f, like))), (X,)), y), flatten(like)).numpy()
    sel = select_parameters(model, "none")
    assert [(n, i) for n, i in H.layer_blocks(sel)] == [("0", [0, 1]), ("2", [2, 3])]

    def make(params=None):
        return HessianOperator(model, list(params or sel.params), [(X, y)], F.cross_entropy, 40)

    r = H.spectrum_report(make(), SpectrumSettings(k=2, tol=1e-9, trace_probes=0, density_probes=0, blocks=3),
                          selection=sel, make_block=make)
    assert [b.name for b in r.blocks] == ["0", "2"] and [b.dim for b in r.blocks] == [42, 24]
    for b, sl in zip(r.blocks, (slice(0, 42), slice(42, 66))):
        ev = eigvalsh(Hm[sl, sl])
        np.testing.assert_allclose(b.top.values, ev[::-1][:3], rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(b.bottom.values, ev[:1], rtol=1e-7, atol=1e-9)
        assert b.top.converged.all() and b.bottom.converged.all()
    assert set(r.num_hvp) >= {"top", "bottom", "block 0", "block 2", "total"}


def test_subspace_overlap_and_gradient_fraction():
    g = torch.Generator().manual_seed(9)
    Q, _ = torch.linalg.qr(torch.randn(50, 50, generator=g, dtype=torch.float64))
    A, B = Q[:, :4].T, Q[:, 2:6].T  # share two of four directions
    assert density.subspace_overlap(A, A) == pytest.approx(1.0, abs=1e-12)
    assert density.subspace_overlap(A, -3.0 * A) == pytest.approx(1.0, abs=1e-12)  # sign and scale free
    assert density.subspace_overlap(A, B) == pytest.approx(0.5, abs=1e-12)
    assert density.subspace_overlap(A, Q[:, 10:14].T) == pytest.approx(0.0, abs=1e-12)
    v = 3 * Q[:, 0] + 4 * Q[:, 20]
    assert density.fraction_in_subspace(v, A) == pytest.approx(9 / 25, abs=1e-12)
    assert math.isnan(density.fraction_in_subspace(torch.zeros(50, dtype=torch.float64), A))
    with pytest.raises(UserError, match="subspace_overlap"):
        density.subspace_overlap(A, Q[:10, :3].T)


def test_a_running_report_says_each_stage_with_its_true_product_count():
    """The progress lines of spectrum_report: the first product's time, each stage's start and end;
    the counts said before a stage (trace, density) are the products it then takes, and every
    end line's count is the report's own."""
    model, X, y = _tiny()
    sel = select_parameters(model, "none")

    def make(params=None):
        return HessianOperator(model, list(params or sel.params), [(X, y)], F.cross_entropy, 40)

    lines: list[str] = []
    settings = SpectrumSettings(k=2, trace_probes=7, density_probes=2, density_iters=9, blocks=1)
    r = H.spectrum_report(make(), settings, selection=sel, make_block=make, say=lines.append)
    assert all(line.startswith("hessian: ") for line in lines)
    assert lines[0] == "hessian: top 2 eigenpairs ..." and lines[1].startswith("hessian: one product over the data takes ")
    assert sum("one product" in line for line in lines) == 1
    ends = {line.split(": ")[1]: int(line.rsplit(": ", 1)[1].split()[0]) for line in lines
            if " products in " in line}
    assert ends == {"top 2 eigenpairs": r.num_hvp["top"], "bottom 2 eigenpairs": r.num_hvp["bottom"],
                    "trace, 7 Hutchinson probes": r.num_hvp["trace"],
                    "spectral density, 2 SLQ probes of 9 steps": r.num_hvp["density"],
                    "block 0": r.num_hvp["block 0"], "block 2": r.num_hvp["block 2"]}
    assert r.num_hvp["trace"] == 7 and r.num_hvp["density"] == 2 * 9  # what the start lines announced
    assert any(line.startswith("hessian: trace, 7 Hutchinson probes (7 products, about ") for line in lines)
    assert any(line.startswith("hessian: spectral density, 2 SLQ probes of 9 steps (18 products, about ") for line in lines)
    assert "hessian: the top 1 eigenpair of each of 2 layers' blocks ..." in lines
    # without say= a report is silent and the same
    quiet = H.spectrum_report(make(), settings, selection=sel, make_block=make)
    np.testing.assert_allclose(quiet.top.values, r.top.values, rtol=1e-10)
