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
    mode: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise choice_error("precision mode", self.mode, MODES)


def resolve_precision(mode: str, channels_last: bool | None, compile: bool, device: torch.device) -> Precision:
    """``mode: auto`` is fp32 on CPU and tf32 with channels_last on CUDA (error < 1e-3);
    ``channels_last=None`` follows the mode (on only for auto on CUDA)."""
    if mode == "auto":
        if device.type == "cuda":
            return Precision("tf32", channels_last=True if channels_last is None else channels_last, compile=compile)
        return Precision("fp32", channels_last=bool(channels_last), compile=compile)
    return Precision(mode, bool(channels_last), compile)


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
