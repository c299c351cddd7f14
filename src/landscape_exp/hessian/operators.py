"""Hessian-vector products of the full-data loss, without ever forming the Hessian (and the
same for its Gauss-Newton and empirical-Fisher alternatives: :class:`GaussNewtonOperator`,
:class:`FisherOperator`).

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
from landscape_exp.weights.params import flatten, unflatten

Batch = tuple[Tensor, Tensor]
BatchSource = Iterable[Batch] | Callable[[], Iterable[Batch]]
LossFn = Callable[[Tensor, Tensor], Tensor]


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

    def _batch_product(self, x: Tensor, y: Tensor, scale: float, vs: list[Tensor]) -> Sequence[Tensor] | None:
        """This batch's share of the product (None: nothing to add)."""
        loss = self._batch_loss(x, y, scale)
        grads = torch.autograd.grad(loss, self.params, create_graph=True, materialize_grads=True)
        gv = sum((g * vi).sum() for g, vi in zip(grads, vs))
        if not gv.requires_grad:
            return None  # the loss is linear in params on this batch: zero curvature
        return torch.autograd.grad(gv, self.params, materialize_grads=True)

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` of the full-data mean loss, as a flat tensor (parameters' dtype and device)."""
        if v.dim() != 1 or v.numel() != self.dim:
            raise UserError(f"matvec needs a flat vector of length {self.dim}, got shape {tuple(v.shape)}")
        vs = unflatten(v.to(device=self.device, dtype=self.dtype), self.params)
        out = [torch.zeros_like(p) for p in self.params]
        for x, y, scale in self._iter_batches():
            part = self._batch_product(x, y, scale, vs)
            if part is not None:
                torch._foreach_add_(out, [h.detach() for h in part])
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


def _jvp(outputs: Tensor, params: Sequence[Tensor], vs: Sequence[Tensor]) -> Tensor:
    """``J v`` for ``J = d outputs / d params`` by the double-vjp trick (reverse mode only, so
    every layer works): ``J^T u`` is linear in a dummy ``u``, and its gradient of ``(J^T u) . v``
    with respect to ``u`` is ``J v``.  The graph of ``outputs`` is kept for a later ``J^T``."""
    u = torch.zeros_like(outputs, requires_grad=True)
    jtu = torch.autograd.grad(outputs, params, grad_outputs=u, create_graph=True, materialize_grads=True)
    dot = sum((a * b).sum() for a, b in zip(jtu, vs))
    if not dot.requires_grad:  # the outputs do not depend on these parameters
        return torch.zeros_like(outputs)
    return torch.autograd.grad(dot, u)[0]


class GaussNewtonOperator(HessianOperator):
    """``v -> G v`` for the generalized Gauss-Newton matrix ``G = (1/N) sum_i J_i^T H_i J_i``
    (Schraudolph 2002; Martens 2020): ``J_i`` the Jacobian of sample ``i``'s network outputs
    (logits) with respect to ``params`` and ``H_i`` the Hessian of its loss with respect to
    those outputs.  ``G`` drops the Hessian's term with the second derivatives of the network;
    it is positive semidefinite when the loss is convex in the outputs (cross-entropy).  Per
    batch: ``J v`` (double vjp), ``H_out (J v)`` (double backward through the loss on detached
    outputs, so any ``loss_fn`` works), then ``J^T`` of that.  Same arguments as
    :class:`HessianOperator`."""

    def _batch_product(self, x: Tensor, y: Tensor, scale: float, vs: list[Tensor]) -> Sequence[Tensor] | None:
        z = self.model(x)
        jv = _jvp(z, self.params, vs)
        zd = z.detach().requires_grad_(True)
        gz = torch.autograd.grad(self.loss_fn(zd, y) * scale, zd, create_graph=True)[0]
        if not gz.requires_grad:
            return None  # the loss is linear in the outputs: G = 0
        hjv = torch.autograd.grad((gz * jv.detach()).sum(), zd)[0]
        return torch.autograd.grad(z, self.params, grad_outputs=hjv, materialize_grads=True)


class FisherOperator(HessianOperator):
    """``v -> F v`` for the empirical Fisher ``F = (1/N) sum_i g_i g_i^T``, ``g_i`` the gradient
    of sample ``i``'s loss (Kunstner et al. 2019 on what it is and is not).  With ``l`` the
    vector of a batch's per-sample losses and ``J`` its Jacobian, ``F v = (1/N) J^T (J v)``:
    two passes per batch and no per-sample gradients in memory.

    Args as :class:`HessianOperator` plus ``per_sample_loss_fn(logits, targets)`` -> the (B,)
    vector of per-sample losses (``loss_fn`` is still used for :meth:`loss`/:meth:`gradient`).
    """

    def __init__(self, model: nn.Module, params: Sequence[nn.Parameter], batches: BatchSource, loss_fn: LossFn,
                 num_samples: int, per_sample_loss_fn: LossFn) -> None:
        super().__init__(model, params, batches, loss_fn, num_samples)
        self.per_sample_loss_fn = per_sample_loss_fn

    def _batch_product(self, x: Tensor, y: Tensor, scale: float, vs: list[Tensor]) -> Sequence[Tensor] | None:
        losses = self.per_sample_loss_fn(self.model(x), y)
        if losses.shape != y.shape[:1]:
            raise UserError(f"per_sample_loss_fn returned shape {tuple(losses.shape)} for a batch of {len(y)}; "
                            "it must return one loss per sample")
        jv = _jvp(losses, self.params, vs)
        return torch.autograd.grad(losses, self.params, grad_outputs=jv.detach() / self.num_samples,
                                   materialize_grads=True)


