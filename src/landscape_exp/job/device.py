"""The device a job runs on, from ``device=`` and the worker's place on its node."""

from __future__ import annotations

import torch

from landscape_exp.errors import UserError


def resolve_device(spec: str | None, local_rank: int = 0) -> torch.device:
    """``device=`` as a torch device. ``local_rank``: this worker's rank on its node when a job
    runs several workers (submitit tasks_per_node); ``auto``/``cuda`` then take GPU
    ``local_rank % visible GPUs``, one GPU per worker."""
    spec = str(spec or "auto")
    if spec in ("auto", "cuda") and local_rank and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}; allowed: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {spec!r} was asked for but CUDA is not available; use device=cpu or device=auto")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {spec!r}; allowed: auto, cpu, cuda, cuda:N")
    return dev
