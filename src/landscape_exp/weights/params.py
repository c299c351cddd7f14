"""Which tensors of a model move, and how they flatten into one vector: the one place that decides.

A direction, a trajectory row, the domain of a Hessian and a sharpness perturbation all act on a
selection of a model's tensors, chosen by the same rules:

* ``kind``: ``weights`` are ``model.named_parameters()`` in order (the original tool's
  ``net.parameters()``); ``states`` are ``model.state_dict()`` in order (BatchNorm running
  statistics included). A direction file stores one tensor per entry, in that order.
* ``ignore='biasbn'`` leaves out every tensor of at most one dimension (biases, normalization
  layers' parameters and statistics), as the original's ``--xignore biasbn``; ``None`` keeps them.
* Tensors that are not floating point (``num_batches_tracked``) never move.
* A Hessian or a sharpness perturbation acts on *trainable* parameters only (``requires_grad``).

Flattening concatenates the selected tensors row-major in order; :func:`unflatten` is its inverse
(zeros where a tensor is not selected). Everything is plain tensor code, checkable by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape_exp.config.choices import DIRECTION_TYPES, check_ignore
from landscape_exp.errors import UserError, choice_error

Direction = list[Tensor]


def named_tensors(model: nn.Module, kind: str) -> list[tuple[str, Tensor]]:
    """The live tensors a direction of ``kind`` moves, in the original tool's order.

    ``weights``: ``model.named_parameters()``; ``states``: ``model.state_dict()`` (whose tensors
    share storage with the model, so in-place updates move the model).
    """
    if kind == "weights":
        return [(n, p.data) for n, p in model.named_parameters()]
    if kind == "states":
        return list(model.state_dict().items())
    raise choice_error("direction type", kind, DIRECTION_TYPES)


def snapshot(model: nn.Module, kind: str) -> Direction:
    """Detached copies of the tensors a direction of ``kind`` moves."""
    return [t.detach().clone() for _, t in named_tensors(model, kind)]


def moves(t: Tensor, ignore: str | None) -> bool:
    """Whether a direction with ``ignore`` moves tensor ``t``: floating point, and more than one
    dimension under ``biasbn``."""
    return bool(t.is_floating_point() and not (check_ignore(ignore) == "biasbn" and t.dim() <= 1))


def tensor_mask(tensors: Sequence[Tensor], ignore: str | None = "biasbn") -> list[bool]:
    """:func:`moves` for each tensor."""
    ignore = check_ignore(ignore)
    return [moves(t, ignore) for t in tensors]


def selected(tensors: Sequence[Tensor], mask: Sequence[bool] | None) -> list[bool]:
    if mask is None:
        return [t.is_floating_point() for t in tensors]
    if len(mask) != len(tensors):
        raise UserError(f"mask has {len(mask)} entries for {len(tensors)} tensors")
    return [bool(m) and t.is_floating_point() for m, t in zip(mask, tensors)]


def flatten(tensors: Sequence[Tensor], mask: Sequence[bool] | None = None) -> Tensor:
    """The selected tensors (``mask``; default: every floating-point one) concatenated into one vector."""
    parts = [t.reshape(-1) for t, k in zip(tensors, selected(tensors, mask)) if k]
    if not parts:
        raise UserError("no tensor is selected: every tensor is ignored or not floating point")
    return torch.cat(parts)


def unflatten(vector: Tensor, like: Sequence[Tensor], mask: Sequence[bool] | None = None) -> list[Tensor]:
    """Inverse of :func:`flatten`: tensors shaped, typed and placed like ``like``, holding the slices
    of ``vector`` where ``mask`` selects and zeros elsewhere. A slice already of ``like``'s dtype and
    device is a view of ``vector`` (no copy: a Hessian-vector product takes this path per product)."""
    keep = selected(like, mask)
    if vector.dim() != 1:
        raise UserError(f"unflatten needs a 1-D vector, got shape {tuple(vector.shape)}")
    need = sum(t.numel() for t, k in zip(like, keep) if k)
    if vector.numel() != need:
        raise UserError(f"unflatten got a vector of length {vector.numel()}; the selected tensors hold {need} elements")
    out, pos = [], 0
    for t, k in zip(like, keep):
        if k:
            out.append(vector[pos:pos + t.numel()].view(t.shape).to(device=t.device, dtype=t.dtype))
            pos += t.numel()
        else:
            out.append(torch.zeros_like(t))
    return out


@dataclass(frozen=True)
class ParamSelection:
    """Trainable parameters a computation acts on, with where they sit in ``model.parameters()``."""

    indices: tuple[int, ...]  # positions in model.parameters()
    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    num_tensors: int  # len(list(model.parameters()))

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.params)

    def vector(self) -> Tensor:
        """The selected parameters' current values, detached, as one flat vector."""
        return flatten([p.detach() for p in self.params])


def select_parameters(model: nn.Module, ignore: str | None = None, names: Sequence[str] | None = None, *,
                      purpose: str = "to act on", setting: str = "direction.ignore") -> ParamSelection:
    """The trainable floating-point parameters of ``model``: without the 1-D ones when ``ignore='biasbn'``,
    only ``names`` when given. ``purpose`` and ``setting`` word the error when nothing is left."""
    ignore = check_ignore(ignore)
    named = list(model.named_parameters())
    keep = [i for i, (_, p) in enumerate(named) if p.requires_grad and moves(p, ignore)]
    if names is not None:
        trainable = {named[i][0] for i in keep}
        missing = sorted(set(names) - trainable)
        if missing:
            raise UserError(f"parameters {missing} are not trainable parameters of the model; "
                            f"allowed: {', '.join(named[i][0] for i in keep)}")
        keep = [i for i in keep if named[i][0] in set(names)]
    if not keep:
        raise UserError(f"the model has no {'multi-dimensional ' if ignore else ''}trainable parameters {purpose} "
                        f"(ignore={ignore or 'none'})" + (f"; try {setting}=none" if ignore else ""))
    return ParamSelection(tuple(keep), tuple(named[i][0] for i in keep), tuple(named[i][1] for i in keep), len(named))


def vector_to_direction(vec: Tensor, model: nn.Module, selection: ParamSelection) -> Direction:
    """A flat vector over the selected parameters as a full ``weights`` direction: one tensor per
    ``model.parameters()`` entry (the parameter's shape, dtype and device), zeros elsewhere."""
    params = list(model.parameters())
    if len(params) != selection.num_tensors:
        raise UserError(f"the selection is for a model with {selection.num_tensors} parameter tensors, "
                        f"this one has {len(params)}")
    if vec.dim() != 1 or vec.numel() != selection.dim:
        raise UserError(f"eigenvector has shape {tuple(vec.shape)}; the selected parameters hold {selection.dim} numbers")
    out = [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in params]
    offset = 0
    for i in selection.indices:
        n = params[i].numel()
        out[i] = vec[offset:offset + n].detach().reshape(params[i].shape).to(device=params[i].device, dtype=params[i].dtype)
        offset += n
    return out


def direction_to_vector(direction: Sequence[Tensor], selection: ParamSelection) -> Tensor:
    """The selected tensors of a full ``weights`` direction concatenated into one flat vector."""
    if len(direction) != selection.num_tensors:
        raise UserError(f"direction has {len(direction)} tensors; the model has {selection.num_tensors}")
    return torch.cat([direction[i].reshape(-1) for i in selection.indices])
