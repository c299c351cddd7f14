"""Numeric precision modes for evaluation: ``fp32`` (exact reference), ``tf32``, ``bf16``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from landscape_exp.errors import choice_error

MODES = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class Precision:
    """How a forward pass is evaluated. ``fold_bn``: BatchNorm folded into the layer before it
    (:mod:`landscape_exp.folding`; the same function up to rounding). Only ``mode`` changes the
    values beyond rounding; the rest are speed options."""

    mode: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    fold_bn: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise choice_error("precision mode", self.mode, MODES)

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype an evaluation copy of the model is cast to (None: kept in fp32)."""
        return torch.bfloat16 if self.mode == "bf16" else None


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where ``precision=bf16``
    is several times faster than fp32 on conv nets; elsewhere bf16 is emulated and slower."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(f()) for f in probes if f is not None)


def resolve_precision(mode: str, channels_last: bool | None, compile: bool, device: torch.device,
                      fold_bn: bool = False) -> Precision:
    """``mode: auto`` is fp32 on CPU and tf32 on CUDA (error < 1e-3); ``channels_last=None``
    follows the device (on: CUDA tensor cores and oneDNN's CPU convolutions are both faster in it)."""
    cl = True if channels_last is None else channels_last
    if mode == "auto":
        mode = "tf32" if device.type == "cuda" else "fp32"
    return Precision(mode, channels_last=cl, compile=compile, fold_bn=fold_bn)


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
