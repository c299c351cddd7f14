"""Moving a model to a point ``theta0 + sum_k c_k d_k`` of a plane or line in weight space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from landscape_exp.weights.params import Direction, named_tensors


def point_weights(
    origin: Sequence[torch.Tensor], directions: Sequence[Sequence[torch.Tensor]], coeffs: Sequence[float]
) -> list[torch.Tensor]:
    """``origin + sum_k coeffs[k] * directions[k]`` as new tensors (the reference formula)."""
    out = []
    for i, o in enumerate(origin):
        t = o.clone()
        if t.is_floating_point():
            for d, c in zip(directions, coeffs):
                t = torch.add(t, d[i], alpha=c)  # one rounding, as the fused in-place update
        out.append(t)
    return out


class WeightSpace:
    """The model's tensors that directions of one ``kind`` move, with the origin kept on device.

    ``move_to`` updates the live tensors in place with fused multi-tensor kernels: no
    re-allocation and no host-to-device copies per point.
    """

    def __init__(self, model: nn.Module, kind: str, directions: Sequence[Direction]):
        named = named_tensors(model, kind)
        self.kind = kind
        self.names = [n for n, _ in named]
        float_idx = [i for i, (_, t) in enumerate(named) if t.is_floating_point()]
        self.float_names = [named[i][0] for i in float_idx]
        self._targets = [named[i][1] for i in float_idx]
        self._origin = [t.detach().clone() for t in self._targets]
        self._dirs = []
        for d in directions:
            if len(d) != len(named):
                raise ValueError(f"direction has {len(d)} tensors, model has {len(named)} ({kind})")
            self._dirs.append([d[i].to(device=self._targets[j].device, dtype=self._targets[j].dtype)
                               for j, i in enumerate(float_idx)])

    @property
    def origin(self) -> list[torch.Tensor]:
        return self._origin

    @property
    def directions(self) -> list[list[torch.Tensor]]:
        """The directions restricted to the float tensors, on the model's device."""
        return self._dirs

    def stacked_points(self, coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weights at ``P`` points at once: ``{name: (P, *shape)}`` for ``coeffs`` of shape (P, k)."""
        out = {}
        for j, (name, o) in enumerate(zip(self.float_names, self._origin)):
            t = o.unsqueeze(0).expand(coeffs.shape[0], *o.shape)
            for kk, d in enumerate(self._dirs):
                c = coeffs[:, kk].to(device=o.device, dtype=o.dtype).view(-1, *([1] * o.dim()))
                t = t + c * d[j].unsqueeze(0)
            out[name] = t
        return out

    @torch.no_grad()
    def move_to(self, coeffs: Sequence[float]) -> None:
        """Set the model's tensors to ``origin + sum_k coeffs[k] * directions[k]``."""
        if len(coeffs) != len(self._dirs):
            raise ValueError(f"{len(coeffs)} coefficients for {len(self._dirs)} directions")
        torch._foreach_copy_(self._targets, self._origin)
        for d, c in zip(self._dirs, coeffs):
            if c != 0.0:
                torch._foreach_add_(self._targets, d, alpha=float(c))

    def restore(self) -> None:
        self.move_to([0.0] * len(self._dirs))
