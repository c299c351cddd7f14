"""Numeric precision modes for evaluation: ``fp32`` (exact reference), ``tf32``, ``bf16``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from landscape_exp.config.choices import PRECISION_MODES
from landscape_exp.engine.cpu import CpuFeatures, bf16_missing, cpu_features
from landscape_exp.errors import choice_error


@dataclass(frozen=True)
class Precision:
    """How a forward pass is evaluated. ``fold_bn``: BatchNorm folded into the layer before it
    (:mod:`landscape_exp.engine.folding`; the same function up to rounding). Only ``mode`` changes the
    values beyond rounding; the rest are speed options."""

    mode: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    fold_bn: bool = False
    # what this machine changed from what was asked, one line each (the plan prints them)
    notices: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.mode not in PRECISION_MODES:
            raise choice_error("precision mode", self.mode, PRECISION_MODES)

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype an evaluation copy of the model is cast to (None: kept in fp32)."""
        return torch.bfloat16 if self.mode == "bf16" else None


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where ``precision=bf16``
    is several times faster than fp32 on conv nets; elsewhere bf16 is emulated and slower."""
    return cpu_features().bf16_units


def resolve_precision(mode: str, channels_last: bool | None, compile: bool, device: torch.device,
                      fold_bn: bool = False, *, emulate_bf16: bool = False, cpu: CpuFeatures | None = None) -> Precision:
    """The precision a run gets on ``device``, from what was asked and what the machine supports.

    ``mode: auto`` is fp32 on CPU and tf32 on CUDA (error < 1e-3). ``channels_last=None`` follows
    the device: on for CUDA (tensor cores) and for CPUs with oneDNN (its native layout), off without.
    ``bf16`` on a CPU without oneDNN's bf16 kernels (an AVX2-only x86, :mod:`landscape_exp.engine.cpu`)
    runs fp32, which is faster there than emulated bf16 (7-11x on an AVX2 EPYC, docs/engine.md), with a notice
    naming the missing feature; ``emulate_bf16`` keeps bf16 rounding anyway (unfused, slow).
    """
    if mode == "auto":
        mode = "tf32" if device.type == "cuda" else "fp32"
    notices: list[str] = []
    on_cpu = device.type == "cpu"
    f = (cpu or cpu_features()) if on_cpu else None
    if f is not None and mode == "bf16" and not f.bf16_kernels:
        if emulate_bf16:
            notices.append(f"precision=bf16 is emulated on this CPU ({f.describe()}; oneDNN's bf16 kernels need "
                           f"{bf16_missing(f)}): bf16 rounding as asked, 7-11x slower than fp32 on an AVX2 EPYC, "
                           "convolutions unfused")
        else:
            mode = "fp32"
            notices.append(f"precision=bf16 falls back to fp32: this CPU ({f.model or f.machine}) lacks what oneDNN's "
                           f"bf16 kernels need, {bf16_missing(f)}; fp32 is faster here than emulated bf16 "
                           "(precision.emulate_bf16=true keeps bf16 rounding)")
    key = "fused_conv_bf16" if mode == "bf16" else "fused_conv"
    if f is not None and not getattr(f, key) and not (mode == "bf16" and not f.bf16_kernels):  # emulated: said above
        notices.append(f"convolutions run unfused on this CPU (oneDNN's conv+ReLU kernel: {f.why.get(key, 'missing')})")
    cl = (not on_cpu or (f is not None and f.mkldnn)) if channels_last is None else channels_last
    return Precision(mode, channels_last=cl, compile=compile, fold_bn=fold_bn, notices=tuple(notices))


@contextlib.contextmanager
def precision_context(p: Precision, device: torch.device) -> Iterator[None]:
    """Set TF32 flags and autocast for ``p``; restores the previous flags on exit.

    fp32 turns TF32 *off* explicitly: PyTorch lets cuDNN convolutions use TF32 by default.
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    old = (matmul.fp32_precision, conv.fp32_precision)
    fp = "tf32" if p.mode == "tf32" else "ieee"
    matmul.fp32_precision, conv.fp32_precision = fp, fp
    try:
        if p.mode == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = old
