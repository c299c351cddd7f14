"""Mode connectivity: low-loss curves between two trained networks (Garipov et al. 2018,
arXiv 1802.10026; Draxler et al. 2018, arXiv 1803.00885).

A curve with one bend ``theta`` joins the end points ``w1`` (t = 0) and ``w2`` (t = 1):

* quadratic Bezier: ``phi(t) = (1-t)^2 w1 + 2t(1-t) theta + t^2 w2``;
* polygonal chain: ``w1 -> theta`` for ``t in [0, 1/2]``, ``theta -> w2`` for ``t in [1/2, 1]``;
* segment (for comparison): ``(1-t) w1 + t w2``.

Every point is written as a convex combination ``c1 w1 + c2 theta + c3 w2`` whose coefficients
are exactly ``(1, 0, 0)`` at ``t = 0`` and ``(0, 0, 1)`` at ``t = 1`` (and ``(0, 1, 0)`` at
``t = 1/2`` for the chain), so the curve passes through the end points (and the chain through
its bend) bit for bit. All parameters lie on the curve; BatchNorm running statistics are not
interpolated but recomputed on training data at every evaluated ``t`` (:func:`landscape_exp.engine.batchnorm.recompute_bn_stats`).

Training (:func:`train_curve`) follows Garipov et al.: only the bend is trained, with SGD; every
minibatch draws ``t ~ U[0, 1]``, builds the weights ``phi(t)`` and takes a gradient step of the
minibatch loss at ``phi(t)`` with respect to the bend. BatchNorm layers run in train mode (batch
statistics), and weight decay, when asked for, is ``wd/2 ||phi(t)||^2`` (their ``l2_regularizer``).
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from landscape_exp.config.choices import CURVE_PATHS, CURVE_SCHEDULES, CURVES
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.batchnorm import has_batchnorm, recompute_bn_stats
from landscape_exp.engine.evaluation import evaluate, mean_loss_fn
from landscape_exp.engine.precision import Precision
from landscape_exp.errors import UserError, choice_error
from landscape_exp.io.checkpoint import refusal_reason, safe_torch_load, save_torch
from landscape_exp.training.loop import RunningMetrics, batch_inputs, shuffled_batches


def curve_coefficients(kind: str, t: float) -> tuple[float, float, float]:
    """Weights ``(c1, c2, c3)`` of ``(w1, theta, w2)`` at ``t`` for a curve ``kind``.

    Computed in double precision from a Python float; exactly ``(1, 0, 0)`` at ``t = 0`` and
    ``(0, 0, 1)`` at ``t = 1`` for every kind, ``(0, 1, 0)`` at ``t = 1/2`` for the chain.
    """
    t = float(t)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise UserError(f"curve parameter t={t} must lie in [0, 1]")
    if kind == "bezier":
        return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
    if kind == "polychain":
        # Garipov et al.'s PolyChain: hat functions max(0, 1 - |2t - j|) for j = 0, 1, 2.
        s = 2.0 * t
        return max(0.0, 1.0 - s), 1.0 - abs(s - 1.0), max(0.0, s - 1.0)
    if kind == "segment":
        return 1.0 - t, 0.0, t
    raise choice_error("curve", kind, CURVE_PATHS)


def _combine(w1: Sequence[torch.Tensor], theta: Sequence[torch.Tensor], w2: Sequence[torch.Tensor],
             c: tuple[float, float, float]) -> list[torch.Tensor]:
    if not len(w1) == len(theta) == len(w2):
        raise UserError(f"curve points have {len(w1)}, {len(theta)} and {len(w2)} tensors; they must match")
    out = []
    for a, b, e in zip(w1, theta, w2):
        if a.shape != b.shape or a.shape != e.shape:
            raise UserError(f"curve tensors have shapes {tuple(a.shape)}, {tuple(b.shape)}, {tuple(e.shape)}; they must match")
        # c1*w1 + c2*theta + c3*w2 with the zero terms adding exact zeros: the end points come
        # out bit for bit (up to the sign of zero) while the bend keeps its gradient.
        out.append(c[0] * a + c[1] * b + c[2] * e)
    return out


def bezier_point(w1: Sequence[torch.Tensor], theta: Sequence[torch.Tensor], w2: Sequence[torch.Tensor],
                 t: float) -> list[torch.Tensor]:
    """``(1-t)^2 w1 + 2t(1-t) theta + t^2 w2`` tensor by tensor (differentiable in all three)."""
    return _combine(w1, theta, w2, curve_coefficients("bezier", t))


def polychain_point(w1: Sequence[torch.Tensor], theta: Sequence[torch.Tensor], w2: Sequence[torch.Tensor],
                    t: float) -> list[torch.Tensor]:
    """The polygonal chain ``w1 -> theta -> w2`` with the bend at ``t = 1/2``."""
    return _combine(w1, theta, w2, curve_coefficients("polychain", t))


def segment_point(w1: Sequence[torch.Tensor], w2: Sequence[torch.Tensor], t: float) -> list[torch.Tensor]:
    """The straight segment ``(1-t) w1 + t w2``."""
    return _combine(w1, w1, w2, curve_coefficients("segment", t))


def curve_point(kind: str, w1: Sequence[torch.Tensor], theta: Sequence[torch.Tensor], w2: Sequence[torch.Tensor],
                t: float) -> list[torch.Tensor]:
    """The point at ``t`` of a curve ``kind`` (``bezier``, ``polychain`` or ``segment``)."""
    return _combine(w1, theta, w2, curve_coefficients(kind, t))


def midpoint(w1: Sequence[torch.Tensor], w2: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``(w1 + w2) / 2``: the bend's initial value (the Bezier curve then *is* the segment)."""
    return [0.5 * (a + b) for a, b in zip(w1, w2)]


# ---------------------------------------------------------------------------------------------
# the curve model


class CurveModel(nn.Module):
    """Weights on a one-bend curve between two fixed networks; only the bend is trainable.

    ``base`` is a network of the architecture (deep-copied): it supplies the forward function and
    the BatchNorm buffers, while its parameters are replaced by the curve's weights in
    :meth:`forward` (through ``torch.func.functional_call``, so gradients reach the bend). The end
    points are buffers ``end1_i``/``end2_i``; the bend is ``self.bend`` (a parameter list), in
    ``base.named_parameters()`` order.
    """

    def __init__(
        self,
        base: nn.Module,
        w1: Sequence[torch.Tensor],
        w2: Sequence[torch.Tensor],
        kind: str = "bezier",
        bend: Sequence[torch.Tensor] | None = None,
    ):
        super().__init__()
        if kind not in CURVES:
            raise choice_error("curve", kind, CURVES)
        self.kind = kind
        self.base = copy.deepcopy(base)
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.names = [n for n, _ in self.base.named_parameters()]
        params = [p for _, p in self.base.named_parameters()]
        if len(w1) != len(params) or len(w2) != len(params):
            raise UserError(f"end points have {len(w1)} and {len(w2)} tensors but the model has {len(params)} parameters")
        for i, (a, b, p) in enumerate(zip(w1, w2, params)):
            if a.shape != p.shape or b.shape != p.shape:
                raise UserError(f"end-point tensor {self.names[i]!r} has shapes {tuple(a.shape)}, {tuple(b.shape)}; "
                                f"the model's is {tuple(p.shape)}")
            self.register_buffer(f"end1_{i}", a.detach().to(device=p.device, dtype=p.dtype).clone())
            self.register_buffer(f"end2_{i}", b.detach().to(device=p.device, dtype=p.dtype).clone())
        init = (midpoint(self.end1, self.end2) if bend is None
                else [t.detach().to(device=p.device, dtype=p.dtype) for t, p in zip(bend, params)])
        if len(init) != len(params) or any(t.shape != p.shape for t, p in zip(init, params)):
            raise UserError("the bend does not have the model's parameter shapes")
        self.bend = nn.ParameterList([nn.Parameter(t.clone()) for t in init])

    @property
    def end1(self) -> list[torch.Tensor]:
        return [getattr(self, f"end1_{i}") for i in range(len(self.names))]

    @property
    def end2(self) -> list[torch.Tensor]:
        return [getattr(self, f"end2_{i}") for i in range(len(self.names))]

    def weights(self, t: float, kind: str | None = None) -> list[torch.Tensor]:
        """Parameters at ``t`` on this curve (or on another ``kind``: ``segment``)."""
        return curve_point(kind or self.kind, self.end1, list(self.bend), self.end2, t)

    def forward(self, x: torch.Tensor, t: float, kind: str | None = None) -> torch.Tensor:
        """Logits of the network with the weights at ``t`` (differentiable in the bend)."""
        params = dict(zip(self.names, self.weights(t, kind)))
        return functional_call(self.base, params, (x,))

    @torch.no_grad()
    def load_point(self, t: float, kind: str | None = None) -> nn.Module:
        """Copy the weights at ``t`` into ``base`` and return it (for evaluation with the usual
        module call; BatchNorm statistics are still those of the last recomputation)."""
        for p, w in zip(self.base.parameters(), self.weights(t, kind)):
            p.copy_(w)
        return self.base


def l2_at(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum ||w||^2`` over a point's tensors (the curve's weight-decay term)."""
    return sum((w * w).sum() for w in weights)  # type: ignore[return-value]


def garipov_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Garipov et al.'s schedule: ``base_lr`` for the first half, then linearly down to 1 % at
    90 % of training, then 1 %. ``epoch`` counts from 0."""
    alpha = epoch / max(epochs, 1)
    if alpha <= 0.5:
        factor = 1.0
    elif alpha <= 0.9:
        factor = 1.0 - (alpha - 0.5) / 0.4 * 0.99
    else:
        factor = 0.01
    return base_lr * factor


def train_curve(
    curve: CurveModel,
    data: DeviceData,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "garipov",
    loss: str = "crossentropy",
    seed: int = 0,
    augment: Mapping[str, Any] | None = None,
    state_path: str | Path | None = None,
    identity: Mapping[str, Any] | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train the bend of ``curve`` on ``data``; returns the per-epoch history.

    Each minibatch samples ``t ~ U[0, 1]`` (from a CPU generator seeded with ``seed``, so the
    run is reproducible on any device) and steps SGD on the loss at ``phi(t)``. With
    ``state_path`` the bend, optimizer, generator and history are saved after every epoch and a
    rerun with the same ``identity`` resumes from there.
    """
    if epochs < 0 or batch_size < 1:
        raise UserError(f"curve training needs epochs >= 0 and batch_size >= 1; got epochs={epochs}, batch_size={batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"curve learning rate lr={lr} must be a positive number")
    if weight_decay < 0 or momentum < 0:
        raise UserError(f"curve weight_decay={weight_decay} and momentum={momentum} must be >= 0")
    if schedule not in CURVE_SCHEDULES:
        raise choice_error("curve learning-rate schedule", schedule, CURVE_SCHEDULES)
    loss_fn = mean_loss_fn(loss)
    params = list(curve.bend)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(int(seed))
    aug = dict(augment or {})
    ident = dict(identity or {})
    history: list[dict[str, Any]] = []
    start = 0
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.exists():
        try:
            state = safe_torch_load(path)
        except pickle.UnpicklingError as e:
            raise UserError(f"curve training state {str(path)!r} was refused: it holds objects other than tensors "
                            f"and plain data ({refusal_reason(e)}); delete it or use a new run directory") from None
        except Exception as e:  # truncated or not a torch file
            raise UserError(f"curve training state {str(path)!r} is unreadable ({type(e).__name__}); delete it or "
                            f"use a new run directory") from None
        if state.get("format") != TRAIN_STATE_FORMAT or state.get("identity") != plain_data(ident):
            raise UserError(f"{str(path)!r} holds the training of another curve; use a new run directory or delete it")
        with torch.no_grad():
            for p, b in zip(params, state["bend"]):
                p.copy_(b)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        history = list(state["history"])
        start = int(state["epoch"])
    min_batch = 2 if has_batchnorm(curve.base) else 1
    bar = tqdm(range(start, epochs), desc="curve", unit="epoch", disable=not progress, initial=start, total=epochs)
    for epoch in bar:
        rate = garipov_lr(lr, epoch, epochs) if schedule == "garipov" else lr
        for g in opt.param_groups:
            g["lr"] = rate
        curve.train()
        running = RunningMetrics(data.device)
        for idx in shuffled_batches(len(data), batch_size, gen, data.device, min_size=min_batch):
            t = float(torch.rand((), generator=gen, dtype=torch.float64))  # drawn before the augmentation's draws
            x, y = batch_inputs(data, idx, gen, aug)
            weights = curve.weights(t)
            logits = functional_call(curve.base, dict(zip(curve.names, weights)), (x,))
            batch_loss = loss_fn(logits, y)
            objective = batch_loss + 0.5 * weight_decay * l2_at(weights) if weight_decay > 0 else batch_loss
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            running.add(batch_loss, logits, y)
        m = {"epoch": epoch + 1, "train_loss": running.loss, "train_acc": running.acc, "lr": rate}
        history.append(m)
        if path is not None:
            save_torch(path, {"format": TRAIN_STATE_FORMAT, "identity": plain_data(ident), "epoch": epoch + 1,
                              "bend": [p.detach().cpu() for p in params], "optimizer": opt.state_dict(),
                              "rng": gen.get_state(), "history": history})
        bar.set_postfix(loss=f"{m['train_loss']:.4f}")
        if on_epoch is not None:
            on_epoch(m)
    bar.close()
    curve.eval()
    return history


# ---------------------------------------------------------------------------------------------
# evaluation along a curve


def evaluate_path(
    curve: CurveModel,
    ts: Sequence[float],
    bn_data: DeviceData,
    splits: Mapping[str, DeviceData],
    *,
    kind: str | None = None,
    loss: str = "crossentropy",
    batch_size: int = 1024,
    bn_batch_size: int | None = None,
    precision: Precision = Precision(),
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Loss and accuracy (percent) of every split at each ``t`` on the curve (or ``kind``).

    At each ``t`` the weights are loaded, BatchNorm statistics are recomputed on ``bn_data``
    (training data, batches of ``bn_batch_size``, default ``batch_size``) and the network is
    evaluated in eval mode. Returns ``{"<split>_loss": (n,),
    "<split>_acc": (n,)}``.
    """
    out = {f"{s}_{q}": np.full(len(ts), np.nan) for s in splits for q in ("loss", "acc")}
    curve.eval()
    for i, t in enumerate(tqdm(list(ts), desc=f"eval {kind or curve.kind}", unit="t", disable=not progress)):
        model = curve.load_point(float(t), kind)
        recompute_bn_stats(model, bn_data, batch_size=bn_batch_size or batch_size)
        for name, data in splits.items():
            lo, acc = evaluate(model, data, loss=loss, batch_size=batch_size, precision=precision)
            out[f"{name}_loss"][i], out[f"{name}_acc"][i] = lo, acc
    return out


# ---------------------------------------------------------------------------------------------
# files


TRAIN_STATE_FORMAT = "landscape-exp/curve-training/v1"


# ---------------------------------------------------------------------------------------------
# points on a curve


def plain_data(value: Any) -> Any:
    """JSON-like plain data (what ``torch.load(weights_only=True)`` accepts) from config values."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)
