"""PCA of an optimization path (Li et al. 2018, section 7) as plain tensor math.

Random directions are nearly orthogonal to an optimization path in high dimension, so the path
is drawn on the plane of the top principal components of the matrix whose rows are
``theta_i - theta_final`` (one row per saved epoch, flattened over the tensors that a direction
moves). Conventions, following the original ``plot_trajectory.py`` / ``projection.py``:

* **Centring.** The original fits ``sklearn.decomposition.PCA`` to the difference matrix, which
  subtracts the column means first; so does :func:`pca`. The components are therefore the
  principal axes of the *spread* of the path, and the explained-variance ratios are those of the
  centred matrix (the numbers sklearn and ``numpy.linalg.svd`` of the centred matrix give).
* **Projection.** The plane for the contour passes through ``theta_final`` (not through the mean),
  and each checkpoint is projected as ``theta_i - theta_final`` (not centred), so ``theta_final``
  sits at ``(0, 0)`` and the coordinates are in the units of ``theta_final + a*d1 + b*d2``.
  :func:`project_rows` solves the least-squares problem (the original's ``lstsq`` method), which
  for orthonormal PCA components is the same as taking dot products (its ``cos`` method).
* **Sign.** Principal axes have no sign; each component is flipped so that its entry of largest
  magnitude is positive (scikit-learn's convention since 1.5), which makes results reproducible.

Antognini & Sohl-Dickstein (2018) showed that a high-dimensional random walk also puts most of its
variance in a few components (``6 / (pi^2 k^2)`` for the k-th: 60.8 %, 15.2 %, ...), so a large
explained variance alone does not show that training is low-dimensional: compare with
:data:`RANDOM_WALK_RATIOS`.

Everything here takes and returns tensors on the device of the inputs; the eigen-solve and the
accumulations are done in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from landscape_exp.errors import UserError
from landscape_exp.weights.params import flatten, selected

# Explained-variance ratios of the first principal components of a long random walk in high
# dimension (Antognini & Sohl-Dickstein 2018): 6 / (pi^2 k^2).
RANDOM_WALK_RATIOS: tuple[float, ...] = tuple(6.0 / (math.pi**2 * k**2) for k in range(1, 6))

# Columns per float64 block when accumulating over the (possibly huge) parameter dimension:
# about 64 MiB per block at n = 1 row, less per row for longer paths.
_BLOCK_ELEMENTS = 1 << 23


def _row_dtype(final: Sequence[torch.Tensor]) -> torch.dtype:
    floats = [t.dtype for t in final if t.is_floating_point()]
    dtype = floats[0] if floats else torch.float32
    # Half-precision rows would round the (small) late-training differences away.
    return torch.promote_types(dtype, torch.float32)


def trajectory_row(theta: Sequence[torch.Tensor], final: Sequence[torch.Tensor],
                   mask: Sequence[bool] | None = None) -> torch.Tensor:
    """``theta - final`` over the selected tensors, flattened; on ``final``'s device."""
    if len(theta) != len(final):
        raise UserError(f"a checkpoint has {len(theta)} tensors but the final one has {len(final)}")
    for a, b in zip(theta, final):
        if tuple(a.shape) != tuple(b.shape):
            raise UserError(f"checkpoint tensor of shape {tuple(a.shape)} does not match the final one's {tuple(b.shape)}")
    keep = selected(final, mask)
    dtype = _row_dtype(final)
    parts = [(a.to(device=b.device, dtype=dtype) - b.to(dtype)).reshape(-1) for a, b, k in zip(theta, final, keep) if k]
    if not parts:
        raise UserError("no tensor is selected: every tensor is ignored or not floating point")
    return torch.cat(parts)


def trajectory_matrix(thetas: Sequence[Sequence[torch.Tensor]], final: Sequence[torch.Tensor],
                      mask: Sequence[bool] | None = None) -> torch.Tensor:
    """The ``(n, d)`` matrix whose row ``i`` is ``theta_i - final`` over the selected tensors."""
    if not thetas:
        raise UserError("the trajectory has no checkpoints")
    return torch.stack([trajectory_row(t, final, mask) for t in thetas])


@dataclass(frozen=True)
class PCAResult:
    """Top principal components of a matrix's rows (after centring).

    ``components``: ``(k, d)`` float64, orthonormal rows. ``explained_variance_ratio``: ``(k,)``,
    each component's share of the total variance. ``explained_variance``: ``(k,)``, the variance
    along each component (``s^2 / (n - 1)``, as scikit-learn). ``singular_values``: ``(k,)`` of
    the centred matrix. ``total_variance``: sum of the variances of all components.
    """

    components: torch.Tensor
    explained_variance_ratio: torch.Tensor
    explained_variance: torch.Tensor
    singular_values: torch.Tensor
    total_variance: float


def _block(rows: int) -> int:
    """Columns per float64 block for a matrix of ``rows`` rows."""
    return max(1, _BLOCK_ELEMENTS // max(rows, 1))


def pca(matrix: torch.Tensor, k: int = 2) -> PCAResult:
    """Top-``k`` principal components of the rows of ``matrix`` (``n`` rows of dimension ``d``).

    The rows are centred (column means subtracted), then the ``n x n`` Gram matrix of the centred
    rows is accumulated in float64 over column blocks and eigen-decomposed; the components are
    ``Xc^T u_j / s_j``. This needs ``O(n^2 + k d)`` extra memory, never a copy of the matrix, and
    gives the same components and ratios as an SVD of the centred matrix.
    """
    if matrix.dim() != 2:
        raise UserError(f"the trajectory matrix must be 2-D (checkpoints x weights); got shape {tuple(matrix.shape)}")
    n, d = matrix.shape
    if k < 1:
        raise UserError(f"number of principal components k={k} must be >= 1")
    if n < k + 1:
        raise UserError(f"{k} principal components need at least {k + 1} checkpoints; got {n}")
    if d < k:
        raise UserError(f"{k} principal components need at least {k} weights; got {d}")
    dev = matrix.device
    step = _block(n)
    gram = torch.zeros(n, n, dtype=torch.float64, device=dev)
    for s in range(0, d, step):
        blk = matrix[:, s : s + step].double()
        blk = blk - blk.mean(dim=0, keepdim=True)
        gram += blk @ blk.T
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
    total = float(evals.sum())
    if not math.isfinite(total):
        raise UserError("the trajectory holds non-finite weights (NaN or inf); cannot compute its PCA")
    if float(evals[0]) <= 0.0:
        raise UserError("all checkpoints of the trajectory are identical (over the selected weights); nothing to project")
    # Below this an eigenvalue is rounding noise of the Gram matrix, not a direction of the path.
    tol = float(evals[0]) * n * torch.finfo(torch.float64).eps * 10
    rank = int((evals > tol).sum())
    if rank < k:
        raise UserError(f"the trajectory spans only {rank} dimension(s) over the selected weights; "
                        f"{k} principal components need {k}")
    sv = evals[:k].sqrt()
    u = evecs[:, :k]
    comps = torch.empty(k, d, dtype=torch.float64, device=dev)
    for s in range(0, d, step):
        blk = matrix[:, s : s + step].double()
        blk = blk - blk.mean(dim=0, keepdim=True)
        comps[:, s : s + step] = (u.T @ blk) / sv[:, None]
    # Re-normalise: removes the small loss of orthonormality of eigenvectors of a rounded Gram matrix.
    comps = comps / torch.linalg.vector_norm(comps, dim=1, keepdim=True)
    idx = comps.abs().argmax(dim=1)
    sign = torch.sign(comps[torch.arange(k, device=dev), idx])
    comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
    return PCAResult(
        components=comps,
        explained_variance_ratio=evals[:k] / total,
        explained_variance=evals[:k] / (n - 1),
        singular_values=sv,
        total_variance=total / (n - 1),
    )


def pca_directions(matrix: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(components (k, d), explained_variance_ratio (k,))`` of the centred rows; see :func:`pca`."""
    r = pca(matrix, k)
    return r.components, r.explained_variance_ratio


def project_rows(rows: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Coordinates ``c`` (``(n, k)``, float64) minimising ``||row_i - c_i^T D||`` for each row.

    Solves the normal equations ``(D D^T) c_i = D row_i``: for orthonormal directions (PCA
    components) that is just the dot products ``<row_i, d_j>``; for others it is the original
    tool's ``lstsq`` projection.
    """
    if rows.dim() != 2 or directions.dim() != 2 or rows.shape[1] != directions.shape[1]:
        raise UserError(f"cannot project rows of shape {tuple(rows.shape)} on directions of shape {tuple(directions.shape)}")
    n, d = rows.shape
    k = directions.shape[0]
    dd = torch.zeros(k, k, dtype=torch.float64, device=rows.device)
    dr = torch.zeros(k, n, dtype=torch.float64, device=rows.device)
    step = _block(n + k)
    for s in range(0, d, step):
        db = directions[:, s : s + step].to(device=rows.device, dtype=torch.float64)
        dd += db @ db.T
        dr += db @ rows[:, s : s + step].double().T
    if torch.linalg.matrix_rank(dd).item() < k:
        raise UserError("the projection directions are linearly dependent (or zero); cannot project on them")
    return torch.linalg.solve(dd, dr).T


def project(
    thetas: Sequence[Sequence[torch.Tensor]],
    final: Sequence[torch.Tensor],
    directions: Sequence[Sequence[torch.Tensor]],
    mask: Sequence[bool] | None = None,
) -> torch.Tensor:
    """Coordinates ``(n, k)`` of each ``theta_i - final`` in the plane (or line) of ``directions``
    (each a list of tensors shaped like ``final``), over the selected tensors."""
    rows = trajectory_matrix(thetas, final, mask)
    dirs = torch.stack([flatten([t.to(rows.device) for t in dvec], selected(final, mask)) for dvec in directions])
    return project_rows(rows, dirs)


def path_length(rows: torch.Tensor) -> float:
    """Length of the polyline through the rows (``sum ||row_{i+1} - row_i||``), in float64."""
    total = 0.0
    for i in range(rows.shape[0] - 1):
        total += float(torch.linalg.vector_norm(rows[i + 1].double() - rows[i].double()))
    return total


def polyline_length(points: torch.Tensor) -> float:
    """Length of a low-dimensional polyline (e.g. the projected path), points ``(n, k)``."""
    if points.shape[0] < 2:
        return 0.0
    return float(torch.linalg.vector_norm(points[1:].double() - points[:-1].double(), dim=1).sum())
