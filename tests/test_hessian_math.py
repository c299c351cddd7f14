"""Hessian-vector products and spectral estimates checked against exact Hessians of tiny models.

The reference Hessian is built independently of ``HessianOperator``: ``torch.autograd.functional
.hessian`` of the loss as a function of one flat parameter vector (``torch.func.functional_call``),
in float64, then ``numpy.linalg.eigh``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape_exp.errors import UserError
from landscape_exp.hessian.density import gaussian_density, hutchinson_trace, slq_density
from landscape_exp.hessian.operators import HessianOperator
from landscape_exp.hessian.spectral import SolverOptions, extreme_eigenvalues, lanczos, top_eigenpairs
from landscape_exp.weights.params import flatten, unflatten

N = 64  # samples


class Problem:
    """A tiny float64 model in eval mode, its data, and its exact Hessian with eigen-decomposition."""

    def __init__(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.X, self.y = model, X, y
        self.names = [n for n, _ in model.named_parameters()]
        self.params = list(model.parameters())
        self.H = exact_hessian(model, X, y)
        evals, evecs = np.linalg.eigh(self.H.numpy())
        self.evals, self.evecs = evals, evecs  # ascending; evecs[:, i] is a unit eigenvector

    def op(self, params=None, batch_size: int = N) -> HessianOperator:
        batches = [(self.X[i:i + batch_size], self.y[i:i + batch_size]) for i in range(0, N, batch_size)]
        return HessianOperator(self.model, params or self.params, batches, F.cross_entropy, N)


def exact_hessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    like = [p.detach() for p in model.parameters()]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, dict(zip(names, unflatten(flat, like))), (X,)), y)

    return torch.autograd.functional.hessian(loss, flatten(like)).detach()


def _init_uniform(layers, g: torch.Generator, scale: float) -> None:
    with torch.no_grad():
        for m in layers:
            b = scale / math.sqrt(m.in_features)
            m.weight.copy_((torch.rand(m.weight.shape, generator=g, dtype=torch.float64) * 2 - 1) * b)
            m.bias.copy_((torch.rand(m.bias.shape, generator=g, dtype=torch.float64) * 2 - 1) * b)


@pytest.fixture(scope="module")
def mlp() -> Problem:
    """5 -> 8 -> 3 tanh MLP, 75 parameters.  Seed and weight scale give an indefinite Hessian whose
    three largest and three smallest eigenvalues are separated by >= 8% (so eigenvectors and power
    iteration are well posed); CE's softmax shift invariance adds exact zero eigenvalues."""
    g = torch.Generator().manual_seed(10)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    _init_uniform([model[0], model[2]], g, 3.0)
    X = torch.randn(N, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    return Problem(model, X, y)


@pytest.fixture(scope="module")
def bn_mlp() -> Problem:
    """5 -> 6 -> BatchNorm (eval, non-trivial running stats and affine) -> softplus -> 3."""
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Softplus(), nn.Linear(6, 3)).double()
    _init_uniform([model[0], model[3]], g, 2.0)
    bn = model[1]
    with torch.no_grad():
        bn.weight.copy_(0.5 + torch.rand(6, generator=g, dtype=torch.float64))
        bn.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64) * 0.3)
        bn.running_mean.copy_(torch.randn(6, generator=g, dtype=torch.float64) * 0.2)
        bn.running_var.copy_(0.3 + torch.rand(6, generator=g, dtype=torch.float64))
    model.eval()
    X = torch.randn(N, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    return Problem(model, X, y)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These ops are tiny: on a shared 2-core machine extra intra-op threads only contend
    (measured 10x slower).  Restored afterwards so other test modules are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _dense(A: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda v: A @ v


def _with_spectrum(values: list[float], seed: int) -> torch.Tensor:
    """``U diag(values) U^T`` for a random orthogonal ``U``."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=torch.float64))
    return U @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ U.T


# ----------------------------------------------------------------------------- hvp.py


def test_problem_is_indefinite(mlp: Problem, bn_mlp: Problem) -> None:
    # The spectral tests below are only meaningful on an indefinite, non-trivial Hessian.
    for p in (mlp, bn_mlp):
        assert p.evals[0] < -0.05 and p.evals[-1] > 0.1
        assert torch.allclose(p.H, p.H.T, atol=1e-12)


def test_flatten_unflatten_roundtrip() -> None:
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g), torch.randn(2, 1, 3, generator=g)]
    flat = flatten(ts)
    assert flat.shape == (12 + 5 + 6,)
    assert torch.equal(flat[12:17], ts[1])
    assert torch.equal(flat[:12], ts[0].reshape(-1))
    back = unflatten(flat, ts)
    assert all(torch.equal(a, b) for a, b in zip(back, ts))
    with pytest.raises(UserError, match="length 22"):
        unflatten(flat[:-1], ts)
    with pytest.raises(UserError, match="1-D"):
        unflatten(flat[None], ts)
    with pytest.raises(UserError):
        flatten([])


@pytest.mark.parametrize("which", ["mlp", "bn_mlp"])
def test_hvp_matches_exact_hessian(which: str, request: pytest.FixtureRequest) -> None:
    p: Problem = request.getfixturevalue(which)
    op = p.op()
    assert op.dim == p.H.shape[0] == sum(q.numel() for q in p.params)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(op.dim, generator=g, dtype=torch.float64)
        assert _rel(op.matvec(v), p.H @ v) < 1e-5
    # A basis vector picks out one column.
    e = torch.zeros(op.dim, dtype=torch.float64)
    e[7] = 1.0
    assert _rel(op(e), p.H[:, 7]) < 1e-5
    assert op.num_hvp == 4


def test_hvp_parameter_subset_is_the_sub_block(mlp: Problem) -> None:
    # Biases excluded (ignore=biasbn): the operator is the weights-weights block of the Hessian.
    offsets = np.cumsum([0] + [q.numel() for q in mlp.params])
    keep = [i for i, n in enumerate(mlp.names) if n.endswith("weight")]
    idx = torch.tensor(np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in keep]))
    op = mlp.op(params=[mlp.params[i] for i in keep])
    assert op.dim == len(idx) == 5 * 8 + 8 * 3
    block = mlp.H[idx][:, idx]
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(op.dim, generator=g, dtype=torch.float64)
        assert _rel(op.matvec(v), block @ v) < 1e-5
    # Its gradient is the matching slice of the full gradient.
    full_grad = torch.autograd.grad(F.cross_entropy(mlp.model(mlp.X), mlp.y), mlp.params)
    assert _rel(op.gradient(), flatten(full_grad)[idx]) < 1e-10


def test_hvp_multiple_batches_equal_one_batch(mlp: Problem) -> None:
    one = mlp.op()
    many = mlp.op(batch_size=10)  # 6 batches of 10 and one of 4: the B/N weights matter
    assert len(many.batches) == 7
    chunks = list(many.batches)
    from_callable = HessianOperator(mlp.model, mlp.params, lambda: iter(chunks), F.cross_entropy, N)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(one.dim, generator=g, dtype=torch.float64)
    ref = one.matvec(v)
    assert _rel(many.matvec(v), ref) < 1e-12
    assert _rel(from_callable.matvec(v), ref) < 1e-12
    assert _rel(from_callable.matvec(v), mlp.H @ v) < 1e-5
    assert (one.num_hvp, many.num_hvp, from_callable.num_hvp) == (1, 1, 2)
    # Loss and gradient accumulate the same way.
    loss = F.cross_entropy(mlp.model(mlp.X), mlp.y)
    grad = flatten(torch.autograd.grad(loss, mlp.params))
    assert many.loss() == pytest.approx(loss.item(), rel=1e-12)
    assert _rel(many.gradient(), grad) < 1e-12


def test_linear_operator_float64_numpy(mlp: Problem) -> None:
    A = mlp.op().as_linear_operator()
    assert A.shape == (75, 75) and A.dtype == np.float64
    x = np.random.default_rng(0).standard_normal(75)
    y = A.matvec(x)
    assert y.dtype == np.float64 and y.shape == (75,)
    np.testing.assert_allclose(y, mlp.H.numpy() @ x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((A @ x[:, None]).ravel(), y, rtol=1e-12)


def test_hvp_rejects_bad_input(mlp: Problem) -> None:
    batches = [(mlp.X, mlp.y)]
    with pytest.raises(UserError, match="num_samples=65"):
        HessianOperator(mlp.model, mlp.params, batches, F.cross_entropy, 65).matvec(torch.zeros(75))
    with pytest.raises(UserError, match="one-shot iterator"):
        HessianOperator(mlp.model, mlp.params, iter(batches), F.cross_entropy, N)
    with pytest.raises(UserError, match="not a parameter of the model"):
        HessianOperator(mlp.model, [nn.Parameter(torch.zeros(3))], batches, F.cross_entropy, N)
    with pytest.raises(UserError, match="no parameters"):
        HessianOperator(mlp.model, [], batches, F.cross_entropy, N)
    with pytest.raises(UserError, match="length 75"):
        mlp.op().matvec(torch.zeros(74))
    with pytest.raises(UserError, match="num_samples"):
        HessianOperator(mlp.model, mlp.params, batches, F.cross_entropy, 0)
    trainable = nn.Sequential(nn.Linear(5, 3))
    with pytest.warns(UserWarning, match="training mode"):
        HessianOperator(trainable, list(trainable.parameters()), batches, F.cross_entropy, N)


# ----------------------------------------------------------------------------- Lanczos


def test_lanczos_basis_orthonormal_and_tridiagonalises(mlp: Problem) -> None:
    op = mlp.op()
    g = torch.Generator().manual_seed(4)
    alpha, beta, Q = lanczos(op, op.dim, 40, generator=g)
    assert alpha.shape == (40,) and beta.shape == (39,) and Q.shape == (40, 75)
    assert Q.dtype == torch.float64
    assert float((Q @ Q.T - torch.eye(40, dtype=torch.float64)).abs().max()) < 1e-8
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    scale = float(np.abs(mlp.evals).max())
    assert float((Q @ mlp.H @ Q.T - T).abs().max()) < 1e-8 * scale
    assert bool((beta > 0).all())
    # Q[0] is the normalised start vector, and T is a Gauss quadrature for it: with nodes the
    # Ritz values and weights the squared first components, sum_j w_j theta_j^p = u^T H^p u
    # exactly for p <= 2m - 1 (u = v0 / ||v0||).  SLQ rests on this.
    v0 = torch.randn(75, generator=g, dtype=torch.float64)
    alpha, beta, Q0 = lanczos(op, op.dim, 4, v0=3.0 * v0)
    u = v0 / v0.norm()
    assert _rel(Q0[0], u) < 1e-14
    theta, S = torch.linalg.eigh(torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1))
    Hp_u = u
    for power in range(1, 8):
        Hp_u = mlp.H @ Hp_u
        exact = float(u @ Hp_u)
        quad = float((S[0] ** 2 * theta ** power).sum())
        assert quad == pytest.approx(exact, rel=1e-9, abs=1e-14 * scale ** power), power


def test_lanczos_stops_on_breakdown() -> None:
    # Four distinct eigenvalues: any start vector lies in a 4-dimensional invariant subspace.
    values = [-1.0] * 5 + [0.5] * 10 + [2.0] * 15 + [3.0] * 10
    A = _with_spectrum(values, seed=5)
    g = torch.Generator().manual_seed(6)
    alpha, beta, Q = lanczos(_dense(A), 40, 30, generator=g)
    assert len(alpha) == 4 and len(beta) == 3 and Q.shape == (4, 40)
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    np.testing.assert_allclose(torch.linalg.eigvalsh(T).numpy(), [-1.0, 0.5, 2.0, 3.0], atol=1e-10)
    with pytest.raises(UserError, match="num_iters"):
        lanczos(_dense(A), 40, 0, generator=g)
    with pytest.raises(UserError, match="zero"):
        lanczos(_dense(A), 40, 5, v0=torch.zeros(40, dtype=torch.float64))


def test_lanczos_stays_orthonormal_on_clustered_spectrum() -> None:
    # Four tight clusters (spread 1e-4): once a cluster's Ritz value converges, H q is nearly in
    # span(Q) and a single Gram-Schmidt pass loses orthogonality completely; two passes do not.
    g = torch.Generator().manual_seed(19)
    values = torch.tensor([1.0, 2.0, -1.0, 5.0], dtype=torch.float64).repeat_interleave(10)
    values = values + 1e-4 * torch.randn(40, generator=g, dtype=torch.float64)
    A = _with_spectrum(values.tolist(), seed=20)
    alpha, beta, Q = lanczos(_dense(A), 40, 40, generator=g)
    assert Q.shape == (40, 40)
    assert float((Q @ Q.T - torch.eye(40, dtype=torch.float64)).abs().max()) < 1e-8
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    np.testing.assert_allclose(torch.linalg.eigvalsh(T).numpy(), np.sort(values.numpy()), atol=1e-10)


# ----------------------------------------------------------------------------- eigenpairs


def _check_pairs(vals: torch.Tensor, vecs: torch.Tensor, p: Problem, which: str, k: int) -> None:
    order = np.arange(len(p.evals))[::-1] if which == "LA" else np.arange(len(p.evals))
    idx = order[:k]
    want = p.evals[idx]
    np.testing.assert_allclose(vals.numpy(), want, rtol=1e-4)
    assert vecs.shape == (k, len(p.evals))
    scale = np.abs(p.evals).max()
    for j, i in enumerate(idx):
        gap = np.min(np.abs(np.delete(p.evals, i) - p.evals[i])) / scale
        if gap > 0.01:  # eigenvectors are defined (numerically) only with a gap
            cos = abs(float(vecs[j].double().cpu() @ torch.from_numpy(p.evecs[:, i])))
            assert cos > 0.999, (which, j, cos)


@pytest.mark.parametrize("method", ["lanczos", "eigsh", "power"])
@pytest.mark.parametrize("which", ["LA", "SA"])
def test_top_eigenpairs_match_exact(mlp: Problem, method: str, which: str) -> None:
    op = mlp.op()
    g = torch.Generator().manual_seed(7)
    tol = 1e-8 if method != "power" else 1e-6
    res = top_eigenpairs(op, op.dim, 3, which=which, options=SolverOptions(method, tol, 2000), generator=g)
    _check_pairs(res.values, res.vectors, mlp, which, 3)
    # The residuals are ||H v - theta v||, as the exact Hessian gives them, and all converged.
    exact_res = [float(torch.linalg.vector_norm(mlp.H @ v - t * v)) for t, v in zip(res.values, res.vectors)]
    np.testing.assert_allclose(res.residuals.numpy(), exact_res, rtol=1e-6, atol=1e-13)
    assert res.all_converged
    if method != "eigsh":  # the scale of the test is ||H||; ARPACK shows only the pairs it returns
        assert res.scale == pytest.approx(np.abs(mlp.evals).max(), rel=1e-3 if method == "power" else 1e-6)
    if method == "lanczos":
        assert op.num_hvp < op.dim  # converged before spanning the whole space


def test_power_when_the_most_negative_eigenvalue_dominates() -> None:
    # |lambda_min| > lambda_max: plain power iteration would return -3; the shift trick must not.
    values = [-3.0, -1.0, 0.5, 1.0, 2.0, 0.1, -0.2, 0.0]
    A = _with_spectrum(values, seed=8)
    g = torch.Generator().manual_seed(9)
    power = SolverOptions("power", 1e-10)
    vals = top_eigenpairs(_dense(A), 8, 3, which="LA", options=power, generator=g).values
    np.testing.assert_allclose(vals.numpy(), [2.0, 1.0, 0.5], rtol=1e-6)
    vals = top_eigenpairs(_dense(-A), 8, 2, which="SA", options=power, generator=g).values
    np.testing.assert_allclose(vals.numpy(), [-2.0, -1.0], rtol=1e-6)
    # lambda_max dominates but |lambda_min| beats the second largest: deflated plain power
    # iteration would return -2 as the second pair; the shift by -lambda_min must prevent it.
    C = _with_spectrum([3.0, 1.0, 0.5, -2.0, 0.2, -0.1, 0.0, 0.05], seed=21)
    vals = top_eigenpairs(_dense(C), 8, 3, which="LA", options=power, generator=g).values
    np.testing.assert_allclose(vals.numpy(), [3.0, 1.0, 0.5], rtol=1e-6)
    # Repeated eigenvalue: Lanczos restarts after breakdown and finds both copies.
    B = _with_spectrum([4.0, 4.0, 1.0, 0.5, -1.0, 0.0], seed=10)
    res = top_eigenpairs(_dense(B), 6, 2, generator=g)
    np.testing.assert_allclose(res.values.numpy(), [4.0, 4.0], rtol=1e-10)
    assert abs(float(res.vectors[0] @ res.vectors[1])) < 1e-8


def test_float32_operator_drives_float64_algorithms(mlp: Problem) -> None:
    # The usual GPU setup: an fp32 model/HVP, fp64 Lanczos vectors; results come back in the
    # algorithm's dtype and agree with the fp64 exact spectrum to fp32 accuracy.
    model32 = copy.deepcopy(mlp.model).float()
    op = HessianOperator(model32, list(model32.parameters()), [(mlp.X.float(), mlp.y)], F.cross_entropy, N)
    assert op.dtype == torch.float32 and op.matvec(torch.ones(75, dtype=torch.float64)).dtype == torch.float32
    g = torch.Generator().manual_seed(22)
    res = top_eigenpairs(op, op.dim, 2, options=SolverOptions(tol=1e-4), generator=g)
    assert res.vectors.dtype == torch.float64
    np.testing.assert_allclose(res.values.numpy(), mlp.evals[::-1][:2], rtol=1e-4)
    top, bottom = extreme_eigenvalues(op.matvec, op.dim, options=SolverOptions(tol=1e-4), generator=g)
    lam_max, lam_min = float(top.values[0]), float(bottom.values[0])
    assert (lam_max, lam_min) == (pytest.approx(mlp.evals[-1], rel=1e-4), pytest.approx(mlp.evals[0], rel=1e-4))
    alpha, beta, Q = lanczos(op, op.dim, 20, generator=g, dtype=torch.float32)
    assert Q.dtype == torch.float32
    assert float((Q @ Q.T - torch.eye(20)).abs().max()) < 1e-5


def test_top_eigenpairs_rejects_bad_input() -> None:
    A = _with_spectrum([1.0, 2.0, 3.0], seed=0)
    with pytest.raises(UserError, match="which"):
        top_eigenpairs(_dense(A), 3, 1, which="LM")
    with pytest.raises(UserError, match="method"):
        top_eigenpairs(_dense(A), 3, 1, options=SolverOptions("arnoldi"))
    with pytest.raises(UserError, match="tol"):
        SolverOptions(tol=-1.0)
    with pytest.raises(UserError, match="max_iter"):
        SolverOptions(max_iter=0)
    with pytest.raises(UserError, match="k=4"):
        top_eigenpairs(_dense(A), 3, 4)
    with pytest.raises(UserError, match="k < dim"):
        top_eigenpairs(_dense(A), 3, 3, options=SolverOptions("eigsh"))


@pytest.mark.parametrize(("method", "min_method"), [
    ("lanczos", "shift"), ("lanczos", "direct"), ("eigsh", "shift"), ("eigsh", "direct"),
    ("power", "shift"),  # direct power SA is top_eigenpairs(SA, power), tested above
])
def test_extreme_eigenvalues(mlp: Problem, method: str, min_method: str) -> None:
    op = mlp.op()
    g = torch.Generator().manual_seed(11)
    top, bottom = extreme_eigenvalues(op, op.dim, options=SolverOptions(method, 1e-8, 3000), min_method=min_method,
                                      generator=g)
    lam_max, lam_min = float(top.values[0]), float(bottom.values[0])
    assert top.all_converged and bottom.all_converged
    assert lam_max == pytest.approx(mlp.evals[-1], rel=1e-4)
    assert lam_min == pytest.approx(mlp.evals[0], rel=1e-4)
    assert lam_min < 0 < lam_max


def test_extreme_eigenvalues_shift_finds_tiny_lambda_min() -> None:
    # A nearly convex point: lambda_min = -1e-4 next to lambda_max = 10.  Through the shift the
    # tolerance is relative to lambda_max - lambda_min, so power iteration converges; asked
    # directly, a residual of 1e-12 * |lambda_min| is below roundoff and it cannot.
    values = [10.0, 6.0, 4.0, 2.0, 1.5, 1.0, 0.5, -1e-4]
    A = _with_spectrum(values, seed=12)
    g = torch.Generator().manual_seed(13)
    top, bottom = extreme_eigenvalues(_dense(A), 8, options=SolverOptions("power", 1e-12, 5000), generator=g)
    assert float(top.values[0]) == pytest.approx(10.0, rel=1e-10)
    assert float(bottom.values[0]) == pytest.approx(-1e-4, abs=1e-9)
    assert top.all_converged and bottom.all_converged
    # Asked directly, power iteration on -H converges to -10 first and, deflated, crawls down the
    # spectrum; with 20 iterations per pair it stops far from lambda_min, and the flag says so.
    _, direct = extreme_eigenvalues(_dense(A), 8, options=SolverOptions("power", 1e-12, 20), min_method="direct",
                                    generator=g)
    assert not direct.all_converged and float(direct.residuals[0]) > 1e-12 * 10


# ----------------------------------------------------------------------------- trace and density


def test_hutchinson_trace_within_three_standard_errors(mlp: Problem) -> None:
    op = mlp.op()
    m = 400
    est, stderr, samples = hutchinson_trace(op, op.dim, m, generator=torch.Generator().manual_seed(14))
    exact = float(mlp.H.trace())
    assert samples.shape == (m,) and op.num_hvp == m
    assert abs(est - exact) < 3 * stderr
    assert stderr == pytest.approx(float(samples.std()) / math.sqrt(m), rel=1e-12)
    # Rademacher probes: Var(z^T H z) = 2 sum_{i != j} H_ij^2, so the stderr is predictable.
    off = mlp.H - torch.diag(torch.diag(mlp.H))
    predicted = math.sqrt(2 * float((off ** 2).sum()) / m)
    assert 0.75 * predicted < stderr < 1.33 * predicted
    # Same seed, same probes.
    again = hutchinson_trace(op, op.dim, 5, generator=torch.Generator().manual_seed(14))[2]
    assert torch.equal(again, samples[:5])
    with pytest.raises(UserError, match="num_probes"):
        hutchinson_trace(op, op.dim, 1)


def test_slq_density_matches_exact_spectrum(mlp: Problem) -> None:
    op = mlp.op()
    P, m, d = 16, 25, op.dim
    grid, density, nodes, weights, probe = slq_density(op, d, num_probes=P, num_iters=m,
                                                       generator=torch.Generator().manual_seed(15))
    assert torch.equal(probe, torch.arange(P).repeat_interleave(m))
    assert op.num_hvp == P * m
    assert grid.shape == density.shape == (1000,)
    assert nodes.shape == weights.shape == (P * m,)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-3)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((density >= 0).all())
    assert grid[0] < mlp.evals[0] and grid[-1] > mlp.evals[-1]
    # Moments: for unit probes uniform on the sphere, v^T f(H) v has mean tr f(H)/d and
    # variance 2/(d+2) * var(f(lambda)); allow four standard errors of the mean over P probes.
    for power in (1, 2):
        f = mlp.evals ** power
        est = float((weights * nodes ** power).sum())
        se = math.sqrt(2.0 / (d + 2) * f.var() / P)
        assert abs(est - f.mean()) < 4 * se, (power, est, f.mean(), se)
    assert float((weights * nodes ** 2).sum()) == pytest.approx((mlp.evals ** 2).mean(), rel=0.15)
    # Mass sits where the eigenvalues are: CDFs at points between eigenvalues (off the jumps).
    cdf_density = torch.cat([torch.zeros(1, dtype=torch.float64),
                             torch.cumulative_trapezoid(density, grid)])
    srt = np.sort(mlp.evals)
    for q in (10, 25, 50, 65):
        x = 0.5 * (srt[q - 1] + srt[q])
        exact_cdf = q / d
        slq_cdf = float(weights[nodes <= x].sum())
        smooth_cdf = float(np.interp(x, grid.numpy(), cdf_density.numpy()))
        assert abs(slq_cdf - exact_cdf) < 0.1, (q, slq_cdf, exact_cdf)
        assert abs(smooth_cdf - exact_cdf) < 0.1, (q, smooth_cdf, exact_cdf)


def test_slq_on_known_spectrum_and_explicit_grid() -> None:
    # Three eigenvalues with multiplicities 10/20/30: three Lanczos steps span the Krylov space,
    # the nodes are exactly {1, 2, 5} and the weights estimate the multiplicity fractions.
    # At scale 100 PyHessian's kernel variance (1e-5 * width) is narrower than the grid spacing;
    # the default sigma must widen to stay resolved, or the window masses below come out wrong.
    values = [1.0] * 10 + [2.0] * 20 + [5.0] * 30
    P = 60
    for probe, c in (("gaussian", 1.0), ("rademacher", 100.0)):
        A = c * _with_spectrum(values, seed=16)
        grid, density, nodes, weights, _ = slq_density(
            _dense(A), 60, num_probes=P, num_iters=10, probe=probe,
            generator=torch.Generator().manual_seed(17))
        assert len(nodes) == 3 * P  # breakdown after 3 steps, every probe
        np.testing.assert_allclose(np.unique(np.round(nodes.numpy() / c, 8)), [1.0, 2.0, 5.0])
        for value, frac in ((c * 1.0, 1 / 6), (c * 2.0, 1 / 3), (c * 5.0, 1 / 2)):
            mass = float(weights[(nodes - value).abs() < 1e-6 * c].sum())
            assert mass == pytest.approx(frac, abs=0.05)
            window = (grid > value - 0.5 * c) & (grid < value + 0.5 * c)
            assert float(torch.trapezoid(density[window], grid[window])) == pytest.approx(mass, abs=1e-3)
        # tr(H)/dim = 10/3 c; the standard error over 60 probes is about 1.2%.
        assert float((weights * nodes).sum()) == pytest.approx(10 / 3 * c, rel=0.04)
    # Explicit grid and sigma: the density is the normalised kernel sum.
    A = _with_spectrum(values, seed=16)
    grid = torch.linspace(0.0, 6.0, 601, dtype=torch.float64)
    g2, dens, nodes, weights, _ = slq_density(_dense(A), 60, num_probes=4, num_iters=10, grid=grid,
                                           sigma=0.1, generator=torch.Generator().manual_seed(18))
    assert torch.equal(g2, grid)
    by_hand = sum(float(w) * torch.exp(-0.5 * ((grid - float(t)) / 0.1) ** 2) / math.sqrt(2 * math.pi * 0.01)
                  for t, w in zip(nodes, weights))
    by_hand = by_hand / torch.trapezoid(by_hand, grid)
    assert float((dens - by_hand).abs().max()) < 1e-10
    # Unnormalised, the kernel sum already carries total mass sum(weights) = 1.
    raw = gaussian_density(nodes, weights, grid, 0.1)
    assert float(torch.trapezoid(raw, grid)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(UserError, match="probe"):
        slq_density(_dense(A), 60, num_probes=2, num_iters=3, probe="uniform")
    with pytest.raises(UserError, match="sigma"):
        slq_density(_dense(A), 60, num_probes=2, num_iters=3, sigma=-1.0)
