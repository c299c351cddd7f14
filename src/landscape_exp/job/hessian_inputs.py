"""What a Hessian task differentiates over: the configured split (or a seeded subset of it) on
the device, and the line that says so."""

from __future__ import annotations

import torch

from landscape_exp.data.datasets import ImageDataset
from landscape_exp.data.device import DeviceData
from landscape_exp.hessian.analysis import sample_subset
from landscape_exp.job.context import RunContext
from landscape_exp.weights.params import ParamSelection


def hessian_data(ctx: RunContext, dataset: ImageDataset) -> tuple[DeviceData, torch.Tensor]:
    """The samples the loss (and its Hessian) is averaged over, on the device, and their indices
    in the split: the whole ``hessian.split`` or a seeded subset of ``hessian.num_samples``."""
    hs = ctx.settings.hessian
    assert hs is not None
    split = dataset.split(hs.split)
    idx = sample_subset(len(split), hs.num_samples, hs.seed)
    sub = split if hs.num_samples is None else split.subset(idx)
    return DeviceData(sub, dataset.mean, dataset.std, ctx.device), idx


def describe(ctx: RunContext, selection: ParamSelection, num_samples: int) -> str:
    hs = ctx.settings.hessian
    assert hs is not None
    what = {"hessian": "Hessian", "ggn": "Gauss-Newton matrix (GGN)", "fisher": "empirical Fisher"}[hs.curvature]
    return (f"{what} of the mean {hs.split} loss over {num_samples:,} samples w.r.t. {selection.dim:,} parameters "
            f"({len(selection.indices)} tensors), fp32, batch {hs.batch_size_for(ctx.device)}")
