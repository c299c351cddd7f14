"""Eigensolvers for a symmetric operator known only through ``v -> H v``.

Everything here takes an HVP callable ``matvec(v: Tensor) -> Tensor`` (e.g. a
:class:`landscape_exp.hessian.operators.HessianOperator`) and the dimension, and returns tensors/floats:

* :func:`lanczos` - Lanczos tridiagonalisation with full re-orthogonalisation;
* :func:`top_eigenpairs` - the k largest (``"LA"``) or smallest (``"SA"``) eigenpairs by our own
  Lanczos, by ``scipy.sparse.linalg.eigsh`` or by power iteration with deflation, as
  :class:`Eigenpairs` with measured residuals ``||Hv - lambda v||`` and converged flags
  (the solver settings are one :class:`SolverOptions`);
* :func:`bottom_eigenpairs` - the k smallest via the shift ``H - lambda_max I``;
  :func:`extreme_eigenvalues` - the pairs of ``lambda_max`` and ``lambda_min``, the latter by the
  shift like the original tool's ``plot_hessian_eigen.py`` (or directly).

The trace, the density and subspace overlaps are in :mod:`landscape_exp.hessian.density`. One
concept over ~500 lines: the three solvers share the start vectors, the re-orthogonalisation, the
Rayleigh-Ritz step and the residual certification that makes their results comparable, and
splitting them would put that shared core in a module of its own that nothing else uses.

Randomness comes only from the ``torch.Generator`` passed in, drawn on the generator's own device
and then moved, so a seed gives the same probes on CPU and CUDA.  The vectors live on ``device``
(default: the operator's ``device`` attribute if it has one, else CPU) in ``dtype`` (float64 by
default; the small dense problems - tridiagonals, Ritz values - are always float64).  Whatever
dtype the operator returns is cast to ``dtype``, so a float32 HVP can drive float64 algorithms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from landscape_exp.config.choices import SPECTRAL_METHODS
from landscape_exp.errors import UserError, choice_error

MatVec = Callable[[Tensor], Tensor]

WHICH = ("LA", "SA")
MIN_METHODS = ("shift", "direct")
PROBES = ("gaussian", "rademacher")


# ----------------------------------------------------------------------------- helpers


def check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def resolve_device(device: torch.device | str | None, matvec: MatVec) -> torch.device:
    """``device`` if given, else the operator's own device (bound methods included), else CPU."""
    if device is not None:
        return torch.device(device)
    for owner in (matvec, getattr(matvec, "__self__", None)):
        dev = getattr(owner, "device", None)
        if isinstance(dev, (torch.device, str)):
            return torch.device(dev)
    return torch.device("cpu")


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float64, torch.float32):
        raise UserError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    return dtype


def wrapped_operator(matvec: MatVec, dim: int, device: torch.device | str | None,
              dtype: torch.dtype) -> tuple[MatVec, torch.device, torch.dtype]:
    """The checked working dtype, the resolved device and ``matvec`` wrapped for them."""
    dtype = check_dtype(dtype)
    dev = resolve_device(device, matvec)
    return _wrap(matvec, dim, dev, dtype), dev, dtype


def _wrap(matvec: MatVec, dim: int, device: torch.device, dtype: torch.dtype) -> MatVec:
    """``matvec`` with its output checked and cast to the working device/dtype."""

    def mv(v: Tensor) -> Tensor:
        w = matvec(v)
        if w.shape != (dim,):
            raise UserError(f"matvec returned shape {tuple(w.shape)} for a vector of length {dim}")
        return w.detach().to(device=device, dtype=dtype)

    return mv


def randn(dim: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(dim, generator=generator, device=gen_device, dtype=dtype).to(device)


def rademacher(dim: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    gen_device = generator.device if generator is not None else device
    bits = torch.randint(0, 2, (dim,), generator=generator, device=gen_device)
    return (2 * bits - 1).to(device=device, dtype=dtype)


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """Remove from ``w`` its components along the orthonormal rows of ``basis``, twice.

    Two passes of classical Gram-Schmidt ("twice is enough", Parlett) keep the basis orthogonal
    to working precision, which kills the ghost eigenvalues of plain Lanczos.
    """
    if basis.shape[0] == 0:
        return w
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _breakdown_tol(dtype: torch.dtype) -> float:
    # Relative size of a residual that is roundoff rather than a new Krylov direction.
    return 1e-2 * math.sqrt(torch.finfo(dtype).eps)


class _Lanczos:
    """Resumable Lanczos process with full re-orthogonalisation.

    After ``m`` steps: ``H Q^T = Q^T T + beta_last * r e_m^T`` with ``Q`` (m, dim) orthonormal,
    ``T`` tridiagonal (``alpha`` on the diagonal, ``beta`` off it) and ``r`` the unit next vector.
    On breakdown (a residual at roundoff level: the Krylov space is invariant) the process either
    stops or, with ``restart=True``, continues from a fresh random vector orthogonal to ``Q``
    (a zero off-diagonal in ``T``), which also finds repeated eigenvalues.
    """

    def __init__(self, mv: MatVec, v0: Tensor, dim: int, restart: bool,
                 generator: torch.Generator | None) -> None:
        self.mv, self.dim, self.restart, self.generator = mv, dim, restart, generator
        self.device, self.dtype = v0.device, v0.dtype
        self.Q = torch.empty(0, dim, device=self.device, dtype=self.dtype)
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples step j and j+1; beta[-1] is the live residual
        self.anorm = 0.0  # running estimate of ||H|| for the breakdown test
        self.stopped = False  # breakdown without restart, or the whole space spanned
        nrm = float(torch.linalg.vector_norm(v0))
        if not math.isfinite(nrm) or nrm == 0.0:
            raise UserError("lanczos start vector v0 is zero or not finite; pass a nonzero finite vector")
        self._next = v0 / nrm

    @property
    def steps(self) -> int:
        return len(self.alpha)

    @property
    def beta_last(self) -> float:
        """Norm of the residual after the last step (0 when the Krylov space is invariant)."""
        return self.beta[-1] if self.beta else 0.0

    def extend(self, total_steps: int) -> None:
        """Run until ``total_steps`` steps are done or the process stops."""
        total_steps = min(total_steps, self.dim)
        while self.steps < total_steps and not self.stopped:
            q = self._next
            self.Q = torch.cat([self.Q, q[None]])
            w = self.mv(q)
            a = float(q @ w)
            # Full re-orthogonalisation against all of Q subsumes the three-term recurrence.
            w = _orthogonalize(w, self.Q)
            b = float(torch.linalg.vector_norm(w))
            self.alpha.append(a)
            self.anorm = max(self.anorm, math.hypot(a, b))
            if self.steps >= self.dim:
                self.beta.append(0.0)
                self.stopped = True
            elif b > _breakdown_tol(self.dtype) * self.anorm:
                self.beta.append(b)
                self._next = w / b
            else:
                self.beta.append(0.0)
                if not self.restart:
                    self.stopped = True
                else:
                    self._next = self._fresh_direction()
                    if self._next is None:
                        self.stopped = True

    def _fresh_direction(self) -> Tensor | None:
        for _ in range(3):
            v = _orthogonalize(randn(self.dim, self.generator, self.device, self.dtype), self.Q)
            n = float(torch.linalg.vector_norm(v))
            if n > 1e-3:  # ||v|| ~ sqrt(dim - m) unless Q spans (numerically) everything
                return v / n
        return None

    def tridiagonal(self) -> Tensor:
        """``T`` as a dense float64 matrix on the CPU (it is tiny)."""
        m = self.steps
        a = torch.tensor(self.alpha, dtype=torch.float64)
        b = torch.tensor(self.beta[: m - 1], dtype=torch.float64)
        return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)


def _start_vector(v0: Tensor | None, dim: int, generator: torch.Generator | None,
                  device: torch.device, dtype: torch.dtype) -> Tensor:
    if v0 is None:
        return randn(dim, generator, device, dtype)
    if v0.shape != (dim,):
        raise UserError(f"v0 must have shape ({dim},), got {tuple(v0.shape)}")
    return v0.detach().to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- Lanczos


def lanczos(matvec: MatVec, dim: int, num_iters: int, *, generator: torch.Generator | None = None,
            device: torch.device | str | None = None, dtype: torch.dtype = torch.float64,
            v0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Lanczos tridiagonalisation ``Q H Q^T = T`` from ``v0`` (Gaussian random if ``None``).

    Full re-orthogonalisation (two Gram-Schmidt passes per step) against every previous vector.
    Stops early on breakdown (the next residual is roundoff: ``v0`` lies in an invariant subspace
    of dimension ``m``), and never runs more than ``dim`` steps.

    Returns ``(alpha (m,), beta (m-1,), Q (m, dim))``: the diagonal and off-diagonal of ``T``
    (float64, CPU) and the orthonormal Lanczos vectors (``dtype``, on ``device``); ``Q[0]`` is
    ``v0 / ||v0||``.  ``Q`` costs ``m * dim`` numbers of memory.
    """
    check_positive_int("dim", dim)
    check_positive_int("num_iters", num_iters)
    mv, dev, dtype = wrapped_operator(matvec, dim, device, dtype)
    proc = _Lanczos(mv, _start_vector(v0, dim, generator, dev, dtype), dim, restart=False,
                    generator=generator)
    proc.extend(num_iters)
    m = proc.steps
    return (torch.tensor(proc.alpha, dtype=torch.float64),
            torch.tensor(proc.beta[: m - 1], dtype=torch.float64), proc.Q)


# ----------------------------------------------------------------------------- eigenpairs


@dataclass(frozen=True)
class SolverOptions:
    """How an eigen-solver works and when it stops.

    ``method``: ``"lanczos"``, ``"eigsh"`` or ``"power"`` (see :func:`top_eigenpairs`).
    ``tol``: a pair has converged when ``||H v - theta v|| <= tol * scale``, with ``scale`` the
    largest ``|Ritz value|`` the solver has seen (an estimate of ``||H||`` from below).  The test
    is on the scale of the whole spectrum, not of ``|theta|``: an eigenvalue near zero (the
    bulk of a trained network) can then converge at all, and a residual of ``tol * ||H||``
    bounds its error by the same amount (for ``eigsh``, ARPACK's own relative test uses ``tol``).
    ``max_iter``: Lanczos steps (default ``min(dim, 300)``), power iterations per pair (1000) or
    ARPACK restarts (scipy's default).
    """

    method: str = "lanczos"
    tol: float = 1e-5
    max_iter: int | None = None

    def __post_init__(self) -> None:
        if self.method not in SPECTRAL_METHODS:
            raise choice_error("method", self.method, SPECTRAL_METHODS)
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not self.tol >= 0:
            raise UserError(f"tol must be a number >= 0, got {self.tol!r}")
        if self.max_iter is not None:
            check_positive_int("max_iter", self.max_iter)


@dataclass(frozen=True)
class Eigenpairs:
    """Eigenpairs with their accuracy: ``values`` (k,) float64 CPU, most extreme first;
    ``vectors`` (k, dim) unit rows; ``residuals`` (k,) float64 CPU, ``||H v - theta v||``
    measured with one extra product per pair (so it includes the roundoff of the products);
    ``scale`` and ``tol`` of the stopping test; ``steps`` the solver's iterations.

    Each ``theta`` lies within ``residual`` of an eigenvalue of ``H`` (true for any unit vector
    of a symmetric matrix); for the ``j``-th largest (smallest) Ritz value of a Krylov method it
    is also a lower (upper) bound of the ``j``-th largest (smallest) eigenvalue."""

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    scale: float
    tol: float
    steps: int

    @property
    def converged(self) -> Tensor:
        """(k,) bool: ``residual <= tol * scale``."""
        return self.residuals <= self.tol * self.scale

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def shifted(self, by: float) -> Eigenpairs:
        """The same pairs for ``H + by I`` (the residuals do not change)."""
        return replace(self, values=self.values + by)


def _residuals(mv: MatVec, values: Tensor, vectors: Tensor) -> Tensor:
    """``||H v_i - theta_i v_i||`` by one product per pair (float64, CPU)."""
    out = [float(torch.linalg.vector_norm(mv(v) - float(t) * v)) for t, v in zip(values, vectors)]
    return torch.tensor(out, dtype=torch.float64)


def _finish(mv: MatVec, values: Tensor, vectors: Tensor, scale: float, tol: float, steps: int) -> Eigenpairs:
    values = values.detach().to("cpu", torch.float64)
    return Eigenpairs(values, vectors, _residuals(mv, values, vectors), float(scale), float(tol), int(steps))


def _rayleigh_ritz(mv: MatVec, vectors: Tensor, scale: float, tol: float, steps: int) -> Eigenpairs:
    """The Ritz pairs of ``span(vectors)`` (descending) with their residuals, by one product per
    vector: the pairs found one at a time by deflation are made consistent with each other (their
    residuals have no components inside the span left)."""
    q = orthonormal_rows(vectors).to(device=vectors.device, dtype=vectors.dtype)
    hq = torch.stack([mv(v) for v in q])
    theta, S = torch.linalg.eigh(((q @ hq.T + hq @ q.T) / 2).to("cpu", torch.float64))
    order = torch.argsort(theta, descending=True)
    theta, S = theta[order], S[:, order].to(device=q.device, dtype=q.dtype)
    y, hy = S.T @ q, S.T @ hq
    res = torch.linalg.vector_norm(hy - theta.to(device=q.device, dtype=q.dtype)[:, None] * y, dim=1)
    return Eigenpairs(theta, y, res.detach().to("cpu", torch.float64), float(scale), float(tol), int(steps))


def _lanczos_eigenpairs(mv: MatVec, dim: int, k: int, which: str, opts: SolverOptions,
                        generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Eigenpairs:
    """Ritz pairs of a growing Krylov space until ``||H y - theta y|| <= tol * max|theta|`` for all k.

    The residual of a Ritz pair ``(theta_i, y_i = Q^T s_i)`` is ``beta_last * |s_i[-1]|`` by the
    Lanczos relation (exact with full re-orthogonalisation), so checking costs no extra HVPs.
    """
    proc = _Lanczos(mv, randn(dim, generator, device, dtype), dim, restart=True, generator=generator)
    cap = min(dim, max(opts.max_iter or min(dim, 300), k))  # at least k Ritz values are needed
    # The check is a tiny tridiagonal eigenproblem and costs no HVP, so check early and often:
    # every HVP saved is a full pass over the data.
    m = min(cap, max(k + 4, 8))
    while True:
        proc.extend(m)
        theta, S = torch.linalg.eigh(proc.tridiagonal())
        order = torch.argsort(theta, descending=(which == "LA"))[:k]
        theta_k, S_k = theta[order], S[:, order]
        scale = float(theta.abs().max())
        residual = proc.beta_last * S_k[-1].abs()
        done = proc.stopped or bool((residual <= opts.tol * scale).all())
        if done or proc.steps >= cap:
            break
        m = min(cap, proc.steps + max(2, proc.steps // 8))
    if len(theta_k) < k:  # only when the process stopped before finding k Ritz values
        raise UserError(f"lanczos found only {len(theta_k)} eigenpairs for k={k}")
    vecs = S_k.T.to(device=device, dtype=dtype) @ proc.Q
    vecs = vecs / torch.linalg.vector_norm(vecs, dim=1, keepdim=True)
    return _finish(mv, theta_k, vecs, scale, opts.tol, proc.steps)


def _eigsh_eigenpairs(mv: MatVec, dim: int, k: int, which: str, opts: SolverOptions,
                      generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Eigenpairs:
    """ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``); ``which`` may be LM."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    if k >= dim:
        raise UserError(f"eigsh needs k < dim, got k={k} for dim={dim}; use method='lanczos'")
    calls = [0]

    def np_mv(x: np.ndarray) -> np.ndarray:
        calls[0] += 1
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)).to(device, dtype)
        return mv(v).to("cpu", torch.float64).numpy()

    op = LinearOperator((dim, dim), matvec=np_mv, rmatvec=np_mv, dtype=np.float64)
    v0 = randn(dim, generator, torch.device("cpu"), torch.float64).numpy()
    vals, vecs = eigsh(op, k=k, which=which, tol=opts.tol, maxiter=opts.max_iter, v0=v0)
    key = -np.abs(vals) if which == "LM" else (-vals if which == "LA" else vals)
    order = np.argsort(key, kind="stable")
    values = torch.from_numpy(vals[order].copy())
    vectors = torch.from_numpy(vecs[:, order].T.copy()).to(device=device, dtype=dtype)
    return _finish(mv, values, vectors, float(values.abs().max()), opts.tol, calls[0])


def _power(mv: MatVec, dim: int, *, shift: float, deflate: Tensor, tol: float, scale: float, max_iter: int,
           generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype) -> tuple[float, Tensor, int]:
    """Power iteration on ``H + shift I`` restricted to the complement of ``deflate``'s rows.

    Returns the Rayleigh quotient of ``H`` (not of the shifted operator), the unit vector and
    the iterations used; it stops once ``||P H v - lambda v|| <= tol * max(scale, |lambda|)``,
    ``P`` the projector onto the complement of ``deflate`` (the shift does not change the
    residual).  The residual is measured for the deflated operator because the full one cannot
    fall below the residuals of the pairs already found (``q . H v = (H q) . v``).  Deflating by
    projection (rather than Hotelling's ``H - lambda q q^T``) keeps the iterate exactly in the
    complement, so found directions cannot creep back.
    """
    v = _orthogonalize(randn(dim, generator, device, dtype), deflate)
    v = v / torch.linalg.vector_norm(v)
    lam = 0.0
    for it in range(1, max_iter + 1):
        w = _orthogonalize(mv(v), deflate)
        lam = float(v @ w)
        res = float(torch.linalg.vector_norm(w - lam * v))
        if res <= tol * max(scale, abs(lam)):
            return lam, v, it
        w = w + shift * v
        n = float(torch.linalg.vector_norm(w))
        if n == 0.0:  # v is an exact null vector of the shifted operator
            return lam, v, it
        v = w / n
    return lam, v, max_iter


def _power_eigenpairs(mv: MatVec, dim: int, k: int, opts: SolverOptions, generator: torch.Generator | None,
                      device: torch.device, dtype: torch.dtype) -> Eigenpairs:
    """The k largest algebraic eigenpairs by power iteration with deflation.

    Plain power iteration finds the eigenvalue of largest magnitude, which may be the most
    negative one.  So: (1) power on ``H`` gives ``mu``.  (2) If ``mu < 0`` it is ``lambda_min``;
    else it is ``lambda_max`` and, when more pairs are wanted, ``lambda_min`` comes from power on
    ``H - mu I`` (whose top-magnitude eigenvalue is ``lambda_min - lambda_max``).  (3) With
    ``s = max(0, -lambda_min)``, ``H + s I`` is positive semidefinite, so its top-magnitude
    eigenpairs (found one at a time, deflating those already found) are the largest algebraic
    ones of ``H``.  No shift is used when ``H`` is already PSD, which keeps convergence fastest.
    """
    empty = torch.empty(0, dim, device=device, dtype=dtype)
    max_iter = opts.max_iter or 1000
    kw = dict(tol=opts.tol, max_iter=max_iter, generator=generator, device=device, dtype=dtype)
    mu, v, steps = _power(mv, dim, shift=0.0, deflate=empty, scale=0.0, **kw)
    scale = abs(mu)
    vals: list[float] = []
    vecs: list[Tensor] = []
    if mu >= 0:
        vals, vecs = [mu], [v]
        if k > 1:
            nu, _, it = _power(lambda x: mv(x) - mu * x, dim, shift=0.0, deflate=empty, scale=0.0, **kw)
            steps += it
            scale = max(scale, abs(nu + mu))
            shift = max(0.0, -(nu + mu))
    else:
        shift = -mu
    while len(vals) < k:
        basis = torch.stack(vecs) if vecs else empty
        lam, v, it = _power(mv, dim, shift=shift, deflate=basis, scale=scale, **kw)
        steps += it
        vals.append(lam)
        vecs.append(v)
    return _rayleigh_ritz(mv, torch.stack(vecs), scale, opts.tol, steps)


def top_eigenpairs(matvec: MatVec, dim: int, k: int, *, which: str = "LA", options: SolverOptions = SolverOptions(),
                   generator: torch.Generator | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float64) -> Eigenpairs:
    """The ``k`` largest (``which="LA"``) or smallest (``"SA"``) eigenpairs of ``H``, with residuals.

    Methods (``options.method``):
        ``"lanczos"``: our Lanczos with full re-orthogonalisation; the Krylov space grows until
            every wanted Ritz pair has ``||H y - theta y|| <= tol * max|theta|`` or it reaches
            ``max_iter`` steps (default ``min(dim, 300)``).
        ``"eigsh"``: ``scipy.sparse.linalg.eigsh`` on a LinearOperator (ARPACK's relative
            eigenvalue accuracy ``tol``; ``max_iter`` restarts, scipy's default if ``None``).
        ``"power"``: power iteration with deflation and the shift trick for negative
            eigenvalues (see ``_power_eigenpairs``); ``SA`` runs it on ``-H``.  Each pair
            iterates until its deflated residual is ``<= tol * scale`` or ``max_iter`` (default
            1000) iterations.  Converges slowly when eigenvalues are close.

    Every method ends with one product per pair to measure the true residuals; ``converged``
    of the result says which pairs met ``tol`` (nothing is raised or warned: the caller reports
    it).  Eigenvectors are unit-norm with arbitrary sign, most extreme pair first.
    """
    check_positive_int("dim", dim)
    check_positive_int("k", k)
    if k > dim:
        raise UserError(f"k={k} exceeds the dimension {dim}")
    if which not in WHICH:
        raise choice_error("which", which, WHICH)
    if not isinstance(options, SolverOptions):
        raise UserError(f"options must be a SolverOptions, got {type(options).__name__}")
    mv, dev, dtype = wrapped_operator(matvec, dim, device, dtype)
    if options.method == "lanczos":
        return _lanczos_eigenpairs(mv, dim, k, which, options, generator, dev, dtype)
    if options.method == "eigsh":
        return _eigsh_eigenpairs(mv, dim, k, which, options, generator, dev, dtype)
    sign = 1.0 if which == "LA" else -1.0
    res = _power_eigenpairs(lambda x: sign * mv(x), dim, k, options, generator, dev, dtype)
    return replace(res, values=sign * res.values)


def bottom_eigenpairs(matvec: MatVec, dim: int, k: int, lambda_max: float, *, options: SolverOptions = SolverOptions(),
                      generator: torch.Generator | None = None, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float64) -> Eigenpairs:
    """The ``k`` smallest eigenpairs of ``H`` (ascending), found on ``H - lambda_max I``.

    The shift leaves eigenvectors and residuals unchanged and makes every eigenvalue ``<= 0``, so
    the wanted ones are the largest in magnitude: power iteration converges to them and ARPACK
    runs in its fast ``LM`` mode; for Lanczos the Krylov space is the same as for ``H``.  The
    stopping test ``residual <= tol * scale`` is then on the spread ``lambda_max - lambda_min``:
    at a trained minimum the smallest eigenvalues form a dense cluster near zero (gaps of
    ~1e-5 ``lambda_max``), and only a residual below those gaps orders them correctly - hence the
    small default ``tol`` of ``task=hessian``.
    """
    mv, dev, dtype = wrapped_operator(matvec, dim, device, dtype)

    def shifted(v: Tensor) -> Tensor:
        return mv(v) - lambda_max * v.to(device=dev, dtype=dtype)

    if options.method == "eigsh":
        if k >= dim:
            raise UserError(f"eigsh needs k < dim, got k={k} for dim={dim}; use method='lanczos'")
        res = _eigsh_eigenpairs(shifted, dim, k, "LM", options, generator, dev, dtype)
    else:
        res = top_eigenpairs(shifted, dim, k, which="SA", options=options, generator=generator, device=dev, dtype=dtype)
    return res.shifted(lambda_max)


def extreme_eigenvalues(matvec: MatVec, dim: int, *, options: SolverOptions = SolverOptions(), min_method: str = "shift",
                        generator: torch.Generator | None = None, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float64) -> tuple[Eigenpairs, Eigenpairs]:
    """The pairs of ``lambda_max`` and ``lambda_min`` (Section 6 of Li et al. maps ``|lambda_min / lambda_max|``).

    ``lambda_max`` comes from :func:`top_eigenpairs` (``LA``).  With ``min_method="shift"`` (the
    original tool's ``plot_hessian_eigen.py``) ``lambda_min`` comes from
    :func:`bottom_eigenpairs`, so the tolerance applies relative to ``lambda_max - lambda_min``
    and a ``lambda_min`` near zero (a nearly convex point) is still found quickly.
    ``min_method="direct"`` asks for ``SA`` on ``H``.
    """
    if min_method not in MIN_METHODS:
        raise choice_error("min_method", min_method, MIN_METHODS)
    check_positive_int("dim", dim)
    kw = dict(options=options, generator=generator, device=device, dtype=dtype)
    top = top_eigenpairs(matvec, dim, 1, which="LA", **kw)
    if min_method == "direct":
        return top, top_eigenpairs(matvec, dim, 1, which="SA", **kw)
    if dim < 2:
        return top, top
    return top, bottom_eigenpairs(matvec, dim, 1, float(top.values[0]), **kw)


# ----------------------------------------------------------------------------- trace and density


def orthonormal_rows(a: Tensor) -> Tensor:
    q, _ = torch.linalg.qr(a.detach().to("cpu", torch.float64).T)
    return q.T
