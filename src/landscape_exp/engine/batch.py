"""The evaluation batch: chosen per device and model so that a batch's biggest layer output stays
near the caches (a CPU: ResNet-20/56 at 128 is 2.5x faster than at 1024, docs/engine.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from landscape_exp.config.sections import EvalSettings
from landscape_exp.models import build_model


def largest_output_bytes(model: nn.Module, sample_shape: Sequence[int]) -> int:
    """Bytes per sample of the largest output of any leaf module of ``model`` (on the meta device:
    no memory, no compute) for inputs of ``sample_shape`` (C, H, W), in eval mode."""
    sizes: list[int] = []
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() * out.element_size())
                                     if isinstance(out, torch.Tensor) else None) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.empty(2, *sample_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return max(sizes, default=0) // 2


def batch_for_memory(bytes_per_sample: int, budget_bytes: int, min_batch: int, max_batch: int) -> int:
    """The largest power of two in ``[min_batch, max_batch]`` whose ``bytes_per_sample`` batch fits
    ``budget_bytes`` (``min_batch`` when none does): on a CPU the biggest layer output of a batch
    then stays near the caches, and per-batch overheads stay small."""
    batch = 1
    while batch * 2 <= max_batch and batch * 2 * max(1, bytes_per_sample) <= budget_bytes:
        batch *= 2
    return min(max(batch, min_batch), max_batch)


_OUTPUT_BYTES: dict[str, int] = {}


GUESSED_CHANNELS = 16  # a model that cannot be sized: its biggest output taken as 16 channels at the input's size


def eval_batch_size(ev: EvalSettings, model_cfg: dict[str, Any], shape: tuple[int, int, int], device: torch.device) -> int:
    """``eval.batch_size``, else the largest power of two in ``[eval.batch_min, eval.batch_max]`` whose
    biggest layer output of ``model_cfg`` on inputs of ``shape`` fits ``eval.batch_memory_mib`` on ``device``."""
    if ev.batch_size is not None:
        return ev.batch_size
    return batch_for_memory(output_bytes(model_cfg, shape), ev.batch_memory_for(device), ev.batch_min, ev.batch_max)


def output_bytes(model_cfg: dict[str, Any], shape: tuple[int, int, int]) -> int:
    """Bytes per sample of the biggest layer output of the configured model (built on the meta
    device, memoized); a model that cannot be built so is guessed from the input size."""
    key = json.dumps([model_cfg, shape], sort_keys=True, default=str)
    if key not in _OUTPUT_BYTES:
        try:
            with torch.device("meta"):
                model = build_model(dict(model_cfg))
            _OUTPUT_BYTES[key] = largest_output_bytes(model, shape)
        except Exception:  # a model of the user's own, a config it cannot be built from: guess
            _OUTPUT_BYTES[key] = 0
        if not _OUTPUT_BYTES[key]:
            _OUTPUT_BYTES[key] = 4 * GUESSED_CHANNELS * shape[1] * shape[2]
    return _OUTPUT_BYTES[key]
