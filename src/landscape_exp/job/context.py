"""The run context every task receives: typed settings, output directory, device, tracker, and
the data of the configured dataset (loaded once per process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from landscape_exp.config.settings import Settings
from landscape_exp.data.datasets import ImageDataset, dataset_for, eval_subset
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.batch import eval_batch_size
from landscape_exp.engine.precision import Precision, resolve_precision
from landscape_exp.job.tracking import Tracker


@dataclass
class RunContext:
    """One job: its settings, output directory, device and tracker, and what launched it
    (``job``: Hydra's job name, sweep dir, submitit worker)."""

    settings: Settings
    out_dir: Path
    device: torch.device
    tracker: Tracker = field(default_factory=Tracker)
    job: dict[str, Any] = field(default_factory=dict)
    adopted_model: dict[str, Any] | None = None  # the checkpoint's model, when it is not model=

    def adopt_model(self, model_cfg: dict[str, Any], notice: str, *, quiet: bool = False) -> None:
        """Record that the analysed model is ``model_cfg`` (a checkpoint's), not ``model=``: said
        once (``quiet``: the caller says it), and stored the same way everywhere (file attributes,
        W&B config, summary)."""
        if self.adopted_model == model_cfg:
            return
        self.adopted_model = dict(model_cfg)
        if not quiet:
            print(f"note: {notice}")
        self.tracker.update_config({"model": self.adopted_model})

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config as stored with results, with the model actually analysed."""
        cfg = dict(self.settings.config)
        if self.adopted_model is not None:
            cfg["model"] = self.adopted_model
        return cfg

    @property
    def progress(self) -> bool:
        return self.settings.progress

    @property
    def eval_batch_size(self) -> int:
        """``eval.batch_size``, else chosen for the device and the model: the largest power of two in
        ``[eval.batch_min, eval.batch_max]`` whose biggest layer output fits ``eval.batch_memory_mib``
        for this device type. On a CPU that keeps a batch's activations near the caches (ResNet-20/56 on
        CIFAR-10: 128, 2.5x faster than 1024; LeNet on 8x8 digits: 4096, 1.7x faster than 128)."""
        ds = self.settings.dataset
        shape = (int(ds.get("channels") or 3), int(ds.get("image_size") or 32), int(ds.get("image_size") or 32))
        return eval_batch_size(self.settings.eval, self.config.get("model", {}), shape, self.device)

    @property
    def precision(self) -> Precision:
        p = self.settings.precision
        return resolve_precision(p.mode, p.channels_last, p.compile, self.device, fold_bn=p.fold_bn,
                                 emulate_bf16=p.emulate_bf16)

    def dataset(self) -> ImageDataset:
        return dataset_for(self.settings.dataset)

    def eval_splits(self, dataset: ImageDataset, precision: Precision) -> dict[str, DeviceData]:
        """The splits evaluated at every point, resident on the device (the training split as the
        paper's data_split/split_idx subset)."""
        ev = self.settings.eval
        out = {}
        for s in ev.splits:
            split = dataset.split(s)
            if s == "train":
                split = eval_subset(split, ev.data_split, ev.split_idx)
            out[s] = DeviceData(split, dataset.mean, dataset.std, self.device, channels_last=precision.channels_last)
        return out
