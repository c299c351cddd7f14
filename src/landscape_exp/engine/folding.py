"""The network as the surface engine evaluates it: BatchNorm folded into the convolution (or
linear layer) that feeds it, and on CPUs the ReLU (and residual addition) fused into it.

In eval mode ``bn(conv(x)) = s * (W x + b - mu) + beta`` with ``s = gamma / sqrt(var + eps)`` per
output channel, which is one convolution with weight ``s * W`` and bias ``s * (b - mu) + beta``:
the same function up to rounding, with the BatchNorm pass (about an eighth of a ResNet's CPU time)
gone. On a CPU, ``relu(conv(x))`` and ``relu(conv(x) + r)`` then become one oneDNN convolution
with the ReLU/addition as post-ops (``torch.ops.mkldnn._convolution_pointwise``, the kernels
``torch.compile`` uses for frozen CPU graphs; the same values in fp32): two more passes over the
activations gone. The folded weights depend on the point in weight space, so :class:`EvalCopy`
keeps a separate copy of the network whose tensors are recomputed from the live model once per
grid point (:meth:`EvalCopy.refresh`); the live model's own tensors are never changed.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from landscape_exp.engine.cpu import cpu_features

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
RELUS = (F.relu, torch.relu)
ADDS = (operator.add, torch.add)


def can_fuse(device: torch.device, dtype: torch.dtype | None = None) -> bool:
    """Whether oneDNN's fused convolutions run on ``device`` in ``dtype`` (None: fp32): CPUs whose
    probe ran them right (:func:`landscape_exp.engine.cpu.cpu_features`; bf16 needs AVX-512 or avx_ne_convert)."""
    if device.type != "cpu":
        return False
    f = cpu_features()
    return f.fused_conv_bf16 if dtype == torch.bfloat16 else f.fused_conv


def folded_conv(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv`` followed by an eval-mode BatchNorm, computed in float64.

    ``weight``: ``(out, ...)`` (convolution or linear); ``mean``/``var``: the running statistics;
    ``gamma``/``beta``: the affine parameters (None when ``affine=False``). Returned in
    ``weight``'s dtype and memory format.
    """
    scale = torch.rsqrt(var.double() + eps)
    if gamma is not None:
        scale = scale * gamma.double()
    b = -mean.double() if bias is None else bias.double() - mean.double()
    b = b * scale
    if beta is not None:
        b = b + beta.double()
    w = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    return w.to(weight.dtype), b.to(weight.dtype)


@dataclass(frozen=True)
class FoldPair:
    """A layer and the BatchNorm that is its only consumer (qualified module names)."""

    layer: str
    norm: str


def fold_pairs(graph_module: fx.GraphModule) -> list[FoldPair]:
    """Layer -> BatchNorm pairs of a traced model that can be folded: the norm's input is the
    layer's output and nothing else reads it, and the norm uses running statistics (eval mode)."""
    modules = dict(graph_module.named_modules())
    pairs = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), NORMS):
            continue
        norm = modules[node.target]
        src = node.args[0] if node.args else None
        if (norm.training or norm.running_mean is None or len(node.args) != 1 or node.kwargs
                or not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1):
            continue
        layer = modules.get(src.target)
        if isinstance(layer, FOLDABLE) and layer.weight.shape[0] == norm.num_features:
            pairs.append(FoldPair(str(src.target), str(node.target)))
    return pairs


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return ((node.op == "call_function" and node.target in RELUS and len(node.args) == 1)
            or (node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.ReLU))
            or (node.op == "call_method" and node.target == "relu" and len(node.args) == 1))


def fuse_conv_relu(gm: fx.GraphModule, *, residual: bool = True) -> int:
    """Rewrite ``relu(conv(x))`` and, with ``residual``, ``relu(conv(x) + r)`` (2-D convolutions
    whose output nothing else reads) as fused oneDNN calls on the conv's own weight and bias;
    returns how many. (``torch.compile`` cannot trace the residual form: it has no fake-tensor
    kernel, so a compiled copy fuses only the first and leaves the addition to the compiler.)"""
    modules = dict(gm.named_modules())
    graph = gm.graph
    fused = 0
    for node in list(graph.nodes):
        conv = modules.get(str(node.target)) if node.op == "call_module" else None
        if (not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str)
                or len(node.users) != 1 or len(node.args) != 1 or node.kwargs):
            continue
        user = next(iter(node.users))
        other = None
        if residual and user.op == "call_function" and user.target in ADDS and len(user.args) == 2 and not user.kwargs:
            other = user.args[1] if user.args[0] is node else user.args[0]
            if not isinstance(other, fx.Node) or other is node or len(user.users) != 1:
                continue
            relu = next(iter(user.users))
        else:
            relu = user
        if not _is_relu(relu, modules):
            continue
        geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        with graph.inserting_before(relu):
            w = graph.get_attr(f"{node.target}.weight")
            b = graph.get_attr(f"{node.target}.bias") if conv.bias is not None else None
            if other is None:
                new = graph.call_function(torch.ops.mkldnn._convolution_pointwise.default,
                                          (node.args[0], w, b, *geometry, "relu", [], ""))
            else:
                new = graph.call_function(torch.ops.mkldnn._convolution_pointwise.binary,
                                          (node.args[0], other, w, b, *geometry, "add", None, "relu", [], ""))
        relu.replace_all_uses_with(new)
        graph.erase_node(relu)
        if other is not None:
            graph.erase_node(user)
        graph.erase_node(node)
        fused += 1
    return fused


def _trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow and the like: evaluate unfolded
        return None


class EvalCopy:
    """A private copy of ``model`` for evaluation, optionally with BatchNorm folded (``fold``),
    conv-ReLU fused (``fuse``: where :func:`can_fuse` says the kernels run), in ``dtype`` and
    ``channels_last``; :meth:`refresh` copies the live model's current tensors into it.

    A model that cannot be traced (``torch.fx``) gives a plain copy; :attr:`num_folded` and
    :attr:`num_fused` say how many BatchNorm layers were folded and convolutions fused. Inputs
    are cast to ``dtype``. A point whose tensors are not all finite gives NaN outputs, as the model
    would (:attr:`finite`).
    ``compile``: the copy runs under ``torch.compile`` for batches of the first batch's shape
    (other shapes, such as a split's last partial batch, run uncompiled: one compilation per run,
    not two); :meth:`refresh` writes into the same tensors, which the compiled graph takes as
    inputs, so a new grid point does not recompile.
    """

    def __init__(self, model: nn.Module, *, fold: bool = True, fuse: bool = False, dtype: torch.dtype | None = None,
                 channels_last: bool = False, compile: bool = False):
        self.model = model
        self.dtype = dtype
        fuse = fuse and can_fuse(next(model.parameters(), torch.empty(0)).device, dtype)
        twin = copy.deepcopy(model)
        traced = _trace(twin) if fold or fuse else None
        self.pairs = fold_pairs(traced) if traced is not None and fold else []
        net: nn.Module = twin
        self.num_fused = 0
        if traced is not None:
            _remove_norms(traced, self.pairs)
            self.num_fused = fuse_conv_relu(traced, residual=not compile) if fuse else 0
            if self.pairs or self.num_fused:
                net = _finish(traced)
        if dtype is not None:
            net = net.to(dtype)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        live = dict(model.named_parameters()) | dict(model.named_buffers())
        own = dict(self.net.named_parameters()) | dict(self.net.named_buffers())
        folded = {f"{p.layer}.{k}" for p in self.pairs for k in ("weight", "bias")}
        names = [n for n in own if n not in folded and own[n].is_floating_point()]
        missing = [n for n in names if n not in live]
        if missing:
            raise ValueError(f"evaluation copy has tensors the model lacks: {missing[:3]}")
        self._src = [live[n] for n in names]
        self._dst = [own[n] for n in names]
        mods = dict(model.named_modules())
        self._folds = [(mods[p.layer], mods[p.norm], own[f"{p.layer}.weight"], own[f"{p.layer}.bias"])
                       for p in self.pairs]
        self._all = self._dst + [t for fold in self._folds for t in fold[2:]]  # every tensor refresh writes
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = (
            torch.compile(self.net, dynamic=False) if compile else None)
        self._compiled_shape: torch.Size | None = None
        self.refresh()

    @property
    def num_folded(self) -> int:
        return len(self.pairs)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the copy's tensors from the live model (once per grid point)."""
        if self._dst:
            torch._foreach_copy_(self._dst, self._src)
        for layer, norm, w_dst, b_dst in self._folds:
            w, b = folded_conv(layer.weight, layer.bias, norm.running_mean, norm.running_var, norm.eps,
                               norm.weight, norm.bias)
            w_dst.copy_(w)
            b_dst.copy_(b)
        # A NaN/inf weight (a negative interpolated running variance, a diverged checkpoint) must give
        # a NaN loss as the model itself does; oneDNN's fused ReLU maps NaN to 0 and would hide it.
        self.finite = bool(torch.stack([t.isfinite().all() for t in self._all]).all()) if self._all else True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self._forward(x)
        return out if self.finite else out + float("nan")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is not None and x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self._compiled is not None:
            if self._compiled_shape is None:
                self._compiled_shape = x.shape
            if x.shape == self._compiled_shape:
                return self._compiled(x)
        return self.net(x)


def _remove_norms(gm: fx.GraphModule, pairs: list[FoldPair]) -> None:
    """Remove each pair's norm from ``gm`` and give its layer a bias (values set by refresh)."""
    norms = {p.norm for p in pairs}
    for p in pairs:
        layer = gm.get_submodule(p.layer)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype,
                                                  device=layer.weight.device))
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target in norms:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def _finish(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.lint()
    gm.recompile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.delete_all_unused_submodules()
    return gm


def eval_forward(model: nn.Module, *, fold: bool, fuse: bool = False, dtype: torch.dtype | None = None,
                 channels_last: bool = False, compile: bool = False
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], EvalCopy | None]:
    """The forward to evaluate ``model`` with, and the copy to :meth:`EvalCopy.refresh` after each
    move; the copy is None (the model itself runs, compiled if asked) when there is nothing to
    fold or fuse and no dtype change."""
    if fold or fuse or dtype is not None:
        twin = EvalCopy(model, fold=fold, fuse=fuse, dtype=dtype, channels_last=channels_last, compile=compile)
        if twin.num_folded or twin.num_fused or dtype is not None:
            return twin, twin
    return (torch.compile(model, dynamic=False) if compile else model), None
