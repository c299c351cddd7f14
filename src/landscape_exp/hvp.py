"""Hessian-vector products of the full-data loss, without ever forming the Hessian.

For parameters ``theta`` (the ones the caller selects) and the full-data mean loss
``L(theta) = (1/N) sum_i l_i(theta)``, ``H v = grad_theta (grad_theta L . v)`` (Pearlmutter's
trick, double backward).  The product is accumulated batch by batch: batch ``b`` with ``B``
samples and mean loss ``loss_b`` contributes ``grad(grad(loss_b * B / N) . v)``, so the sum
over batches is exactly ``H v`` of ``L`` whatever the batch sizes are.

The model is used as given: the caller puts it in ``eval()`` mode first (BatchNorm with batch
statistics or dropout would make the "Hessian" depend on the batching and on chance) and runs
in full precision (no autocast: curvature in bf16 is mostly noise).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn

from landscape_exp.errors import UserError

Batch = tuple[Tensor, Tensor]
BatchSource = Iterable[Batch] | Callable[[], Iterable[Batch]]
LossFn = Callable[[Tensor, Tensor], Tensor]


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate ``tensors`` into one flat vector (in order, each flattened row-major)."""
    if len(tensors) == 0:
        raise UserError("flatten got no tensors; pass at least one tensor")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split the flat ``vec`` into views shaped like ``like`` (the inverse of :func:`flatten`)."""
    if vec.dim() != 1:
        raise UserError(f"unflatten needs a 1-D vector, got shape {tuple(vec.shape)}")
    sizes = [t.numel() for t in like]
    if vec.numel() != sum(sizes):
        raise UserError(f"unflatten got a vector of length {vec.numel()}; the tensors hold {sum(sizes)} numbers")
    return [p.view(t.shape) for p, t in zip(vec.split(sizes), like)]


class HessianOperator:
    """``v -> H v`` for the Hessian of the full-data mean loss w.r.t. the chosen ``params``.

    Args:
        model: the network, already in ``eval()`` mode (the caller's job; a model left in
            training mode gets a warning, since BatchNorm would then use batch statistics).
        params: the parameters to differentiate, e.g. every weight but the biases and BN
            parameters (``ignore=biasbn``).  All other parameters are held fixed.  They must be
            parameters of ``model`` that require grad, all on one device with one dtype.
        batches: the data, as ``(inputs, targets)`` pairs; either a re-iterable (a list, a
            DataLoader) or a zero-argument callable returning a fresh iterable on every call.
            One-shot iterators are refused, because every product needs a full pass.
        loss_fn: ``loss_fn(logits, targets)`` -> the MEAN loss over the batch.
        num_samples: ``N``, the number of samples in one full pass; checked after each pass.

    Vectors are flat tensors of length :attr:`dim` in the order of ``params``; any dtype and
    device is accepted and results come back with the parameters' dtype on their device.
    Every full-data product adds one to :attr:`num_hvp`.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Sequence[nn.Parameter],
        batches: BatchSource,
        loss_fn: LossFn,
        num_samples: int,
    ) -> None:
        self.model = model
        self.params = list(params)
        if not self.params:
            raise UserError("HessianOperator got no parameters; select at least one parameter of the model")
        own = {id(p) for p in model.parameters()}
        for i, p in enumerate(self.params):
            if id(p) not in own:
                raise UserError(f"params[{i}] (shape {tuple(p.shape)}) is not a parameter of the model")
            if not p.requires_grad:
                raise UserError(f"params[{i}] (shape {tuple(p.shape)}) has requires_grad=False; "
                                "only trainable parameters can be differentiated")
        devices = {p.device for p in self.params}
        dtypes = {p.dtype for p in self.params}
        if len(devices) != 1 or len(dtypes) != 1:
            raise UserError(f"params span devices {sorted(map(str, devices))} and dtypes "
                            f"{sorted(map(str, dtypes))}; all must share one device and one dtype")
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise UserError(f"num_samples must be a positive integer, got {num_samples!r}")
        if not callable(batches) and isinstance(batches, Iterator):
            raise UserError("batches is a one-shot iterator; pass a list, a DataLoader or a callable "
                            "returning a fresh iterable (every product needs a full pass)")
        if model.training:
            warnings.warn("HessianOperator: model is in training mode; call model.eval() so BatchNorm "
                          "and dropout do not make the Hessian depend on the batches", stacklevel=2)
        self.batches = batches
        self.loss_fn = loss_fn
        self.num_samples = num_samples
        self.num_hvp = 0
        self._dim = sum(p.numel() for p in self.params)

    @property
    def dim(self) -> int:
        """Number of scalar parameters the Hessian acts on."""
        return self._dim

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def _iter_batches(self) -> Iterator[tuple[Tensor, Tensor, float]]:
        """Yield ``(inputs, targets, B/N)`` on the parameters' device, then check the count."""
        source = self.batches() if callable(self.batches) else self.batches
        seen = 0
        for x, y in source:
            b = len(y)  # a shape, not a value: no host sync
            seen += b
            yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                   b / self.num_samples)
        if seen != self.num_samples:
            raise UserError(f"the batches held {seen} samples but num_samples={self.num_samples}; "
                            "num_samples must be the size of one full pass")

    def _batch_loss(self, x: Tensor, y: Tensor, scale: float) -> Tensor:
        return self.loss_fn(self.model(x), y) * scale

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` of the full-data mean loss, as a flat tensor (parameters' dtype and device)."""
        if v.dim() != 1 or v.numel() != self.dim:
            raise UserError(f"matvec needs a flat vector of length {self.dim}, got shape {tuple(v.shape)}")
        vs = unflatten(v.to(device=self.device, dtype=self.dtype), self.params)
        out = [torch.zeros_like(p) for p in self.params]
        for x, y, scale in self._iter_batches():
            loss = self._batch_loss(x, y, scale)
            grads = torch.autograd.grad(loss, self.params, create_graph=True, materialize_grads=True)
            gv = sum((g * vi).sum() for g, vi in zip(grads, vs))
            if not gv.requires_grad:
                continue  # the loss is linear in params on this batch: zero curvature
            hv = torch.autograd.grad(gv, self.params, materialize_grads=True)
            torch._foreach_add_(out, [h.detach() for h in hv])
        self.num_hvp += 1
        return flatten(out)

    __call__ = matvec

    def gradient(self) -> Tensor:
        """The full-data gradient ``grad L`` as a flat tensor."""
        out = [torch.zeros_like(p) for p in self.params]
        for x, y, scale in self._iter_batches():
            grads = torch.autograd.grad(self._batch_loss(x, y, scale), self.params, materialize_grads=True)
            torch._foreach_add_(out, list(grads))
        return flatten(out)

    def loss(self) -> float:
        """The full-data mean loss ``L``."""
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        with torch.no_grad():
            for x, y, scale in self._iter_batches():
                total += self._batch_loss(x, y, scale).double()
        return float(total)

    def as_linear_operator(self) -> LinearOperator:
        """A symmetric ``scipy`` LinearOperator (float64 numpy in and out) backed by :meth:`matvec`."""

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
            return self.matvec(v).detach().to("cpu", torch.float64).numpy()

        return LinearOperator(shape=(self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np.float64)
