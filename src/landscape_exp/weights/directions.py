"""Directions in weight space (Li et al. 2018, section 4) and their HDF5 files.

A direction is a list of tensors shaped like the tensors :mod:`landscape_exp.weights.params`
selects (``type=weights``: ``model.parameters()`` order; ``type=states``: ``state_dict()`` order).
Everything here is plain tensor math so tests can check it by brute force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from landscape_exp.config.choices import NORMS, check_ignore
from landscape_exp.errors import UserError, choice_error
from landscape_exp.io.files import atomic_path, open_h5
from landscape_exp.weights.params import Direction

# Same guard as the original tool: keeps an all-zero filter from dividing by zero.
_EPS = 1e-10



def random_direction(like: Sequence[torch.Tensor], generator: torch.Generator) -> Direction:
    """Standard Gaussian tensors shaped like ``like``; zeros for non-float tensors.

    Drawn on the CPU from ``generator`` so a seed gives the same direction on every device.
    """
    out: Direction = []
    for w in like:
        if w.is_floating_point():
            d = torch.randn(w.shape, generator=generator, dtype=torch.float32)
            out.append(d.to(device=w.device, dtype=w.dtype))
        else:
            out.append(torch.zeros_like(w))
    return out


def normalize_tensor(d: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    """Normalize one direction tensor (of 2+ dims) against its weight tensor.

    ``filter``: every filter (slice along dim 0: a conv output channel, a linear layer's row)
    gets the norm of the matching filter of ``w``: ``d_ij <- d_ij / ||d_ij|| * ||w_ij||``.
    ``layer``: the whole tensor gets ``||w||``. ``weight``: elementwise ``d * |w|`` (the original
    tool uses ``d * w``, which has the same distribution for a symmetric Gaussian ``d``).
    ``none``: unchanged.
    """
    if norm == "filter":
        d2 = d.reshape(d.shape[0], -1)
        w2 = w.reshape(w.shape[0], -1)
        scale = w2.norm(dim=1, keepdim=True) / (d2.norm(dim=1, keepdim=True) + _EPS)
        return (d2 * scale).reshape(d.shape)
    if norm == "layer":
        return d * (w.norm() / (d.norm() + _EPS))
    if norm == "weight":
        return d * w.abs()
    if norm == "none":
        return d.clone()
    raise choice_error("normalization", norm, NORMS)


def normalize_direction(
    direction: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], norm: str, ignore: str | None
) -> Direction:
    """Normalize a whole direction against ``weights`` (same order and shapes).

    Tensors of at most one dimension (biases, BatchNorm weights and running statistics) are set
    to zero when ``ignore='biasbn'``; otherwise, as in the original tool, they are set equal to
    the weights themselves under a normalizing ``norm`` and kept as drawn under ``none``.
    Non-float tensors (``num_batches_tracked``) never move.
    """
    if norm not in NORMS:
        raise choice_error("normalization", norm, NORMS)
    ignore = check_ignore(ignore)
    if len(direction) != len(weights):
        raise UserError(f"direction has {len(direction)} tensors but the model has {len(weights)}")
    out: Direction = []
    for d, w in zip(direction, weights):
        if not w.is_floating_point():
            out.append(torch.zeros_like(w))
        elif d.dim() <= 1:
            if ignore == "biasbn":
                out.append(torch.zeros_like(w))
            elif norm == "none":
                out.append(d.clone())
            else:
                out.append(w.clone())
        else:
            out.append(normalize_tensor(d, w, norm))
    return out


def create_random_direction(
    weights: Sequence[torch.Tensor], *, seed: int, norm: str = "filter", ignore: str | None = "biasbn"
) -> Direction:
    """A seeded, normalized random direction for ``weights``."""
    gen = torch.Generator().manual_seed(int(seed))
    return normalize_direction(random_direction(weights, gen), weights, norm, ignore)


def difference_direction(
    target: Sequence[torch.Tensor], origin: Sequence[torch.Tensor], ignore: str | None = None
) -> Direction:
    """``target - origin`` (the direction from one model to another); no normalization.

    ``ignore='biasbn'`` zeroes the 1-D tensors; non-float tensors never move.
    """
    ignore = check_ignore(ignore)
    if len(target) != len(origin):
        raise UserError(f"models differ: {len(target)} tensors against {len(origin)}")
    out: Direction = []
    for t, o in zip(target, origin):
        if t.shape != o.shape:
            raise UserError(f"models differ: tensor shape {tuple(t.shape)} against {tuple(o.shape)}")
        if not o.is_floating_point() or (ignore == "biasbn" and o.dim() <= 1):
            out.append(torch.zeros_like(o))
        else:
            out.append(t.to(o) - o)
    return out


def inner(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Euclidean inner product of two directions (float64 accumulation)."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b) if x.is_floating_point()))


def norm(a: Sequence[torch.Tensor]) -> float:
    return math.sqrt(max(inner(a, a), 0.0))


def cosine_similarity(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Cosine of the angle between two directions (nearly 0 for independent random ones)."""
    na, nb = norm(a), norm(b)
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return inner(a, b) / (na * nb)


# ---------------------------------------------------------------------------------------------
# HDF5 direction files, laid out as the original tool's: groups ``xdirection``/``ydirection``
# with one dataset per tensor named by its index.


def save_directions(
    path: str | Path,
    directions: dict[str, Sequence[torch.Tensor]],
    *,
    names: Sequence[str],
    attrs: dict[str, object] | None = None,
) -> Path:
    """Write directions (``{"xdirection": [...], "ydirection": [...]}``) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for group, direction in directions.items():
            g = f.create_group(group)
            for i, t in enumerate(direction):
                g.create_dataset(str(i), data=t.detach().cpu().numpy())
        f.attrs["tensor_names"] = np.array([str(n) for n in names], dtype=h5py.string_dtype())
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


def load_directions(
    path: str | Path, like: Sequence[torch.Tensor], groups: Sequence[str] = ("xdirection", "ydirection")
) -> dict[str, Direction]:
    """Read the requested groups (those present) and check every shape against ``like``."""
    path = Path(path)
    out: dict[str, Direction] = {}
    with open_h5(path, "direction file") as f:
        for group in groups:
            if group not in f:
                continue
            g = f[group]
            if len(g) != len(like):
                raise UserError(
                    f"direction file {str(path)!r} has {len(g)} tensors in {group} but the model has "
                    f"{len(like)} (is it for another model, or for the other direction type?)"
                )
            tensors: Direction = []
            for i, w in enumerate(like):
                if str(i) not in g:
                    raise UserError(f"direction file {str(path)!r}: {group}/{i} is missing")
                arr = np.asarray(g[str(i)][()])
                if tuple(arr.shape) != tuple(w.shape):
                    raise UserError(
                        f"direction file {str(path)!r}: {group}/{i} has shape {tuple(arr.shape)} but the "
                        f"model's tensor {i} has shape {tuple(w.shape)} (a direction file for another model?)"
                    )
                tensors.append(torch.from_numpy(arr).to(device=w.device, dtype=w.dtype))
            out[group] = tensors
    if not out:
        raise UserError(f"direction file {str(path)!r} has none of the groups {list(groups)}")
    return out
