"""The run context every task receives: typed settings, output directory, device, tracker, and
the data of the configured dataset (loaded once per process)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from landscape_exp.data import DeviceData, ImageDataset, eval_subset, load_dataset
from landscape_exp.errors import UserError
from landscape_exp.evaluation import batch_for_memory, largest_output_bytes
from landscape_exp.models import build_model
from landscape_exp.precision import Precision, resolve_precision
from landscape_exp.settings import EvalSettings, Settings
from landscape_exp.tracking import Tracker


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


_DATASETS: dict[str, ImageDataset] = {}
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


def dataset_for(dataset_cfg: dict[str, Any] | Any) -> ImageDataset:
    """The configured dataset (memoized per process: a sweep job loads it once)."""
    key = json.dumps(dict(dataset_cfg), sort_keys=True, default=str)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(dict(dataset_cfg))
    return _DATASETS[key]


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
