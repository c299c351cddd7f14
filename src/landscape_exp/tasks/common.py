"""What every task needs: the run context, the device, data, and the checkpoint to analyse."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from landscape_exp.checkpoint import config_hash, load_checkpoint, model_from_checkpoint
from landscape_exp.data import DeviceData, ImageDataset, eval_subset, load_dataset
from landscape_exp.errors import UserError
from landscape_exp.models import build_model
from landscape_exp.precision import Precision, resolve_precision
from landscape_exp.tracking import Tracker
from landscape_exp.training import train_model


@dataclass
class RunContext:
    """One job: its resolved config, output directory, device and tracker."""

    cfg: DictConfig
    out_dir: Path
    device: torch.device
    tracker: Tracker = field(default_factory=Tracker)
    job: dict[str, Any] = field(default_factory=dict)

    def container(self, node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig,)) or OmegaConf.is_config(node) else node

    @property
    def progress(self) -> bool:
        return bool(self.cfg.get("progress", True))


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


def eval_batch_size(ctx: RunContext) -> int:
    bs = ctx.cfg.eval.get("batch_size")
    if bs is None:
        return 4096 if ctx.device.type == "cuda" else 1024
    if int(bs) < 1:
        raise UserError(f"eval.batch_size={bs} must be >= 1")
    return int(bs)


def precision_for(ctx: RunContext) -> Precision:
    return resolve_precision(ctx.container(ctx.cfg.precision), ctx.device)


_DATASETS: dict[str, ImageDataset] = {}


def dataset_for(ctx: RunContext) -> ImageDataset:
    """The configured dataset (memoized per process: a sweep job loads it once)."""
    dcfg = ctx.container(ctx.cfg.dataset)
    key = json.dumps(dcfg, sort_keys=True, default=str)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(dcfg)
    return _DATASETS[key]


def eval_splits(ctx: RunContext, dataset: ImageDataset, precision: Precision) -> dict[str, DeviceData]:
    """The splits evaluated at every point, resident on the device (training split subset as
    the paper's data_split/split_idx)."""
    splits = list(ctx.cfg.eval.splits)
    bad = [s for s in splits if s not in ("train", "test")]
    if bad or not splits:
        raise UserError(f"eval.splits={splits} must be a non-empty list of: train, test")
    out = {}
    for s in splits:
        split = dataset.split(s)
        if s == "train":
            split = eval_subset(split, int(ctx.cfg.eval.data_split), int(ctx.cfg.eval.split_idx))
        out[s] = DeviceData(split, dataset.mean, dataset.std, ctx.device, channels_last=precision.channels_last)
    return out


def dataset_identity(ctx: RunContext) -> dict[str, Any]:
    """The dataset config minus where it lives (so a cache key survives moving the data)."""
    d = dict(ctx.container(ctx.cfg.dataset))
    for k in ("root", "download"):
        d.pop(k, None)
    return d


def training_identity(ctx: RunContext, seed_offset: int = 0) -> dict[str, Any]:
    return {
        "model": ctx.container(ctx.cfg.model),
        "dataset": dataset_identity(ctx),
        "optim": ctx.container(ctx.cfg.optim),
        "seed": int(ctx.cfg.seed) + seed_offset,
        "loss": str(ctx.cfg.eval.loss),
    }


def train_run(ctx: RunContext, run_dir: Path, seed_offset: int = 0) -> dict[str, Any]:
    """Train the configured model in ``run_dir`` (resuming if it holds a partial run)."""
    ident = training_identity(ctx, seed_offset)
    dataset = dataset_for(ctx)
    torch.manual_seed(ident["seed"])
    model = build_model(ident["model"])
    check_model_fits_dataset(model, dataset, ident["model"].get("name", "?"))
    return train_model(
        model, dataset, ident["optim"], run_dir=run_dir, model_cfg=ident["model"], device=ctx.device,
        seed=ident["seed"], loss=ident["loss"], augment=ident["dataset"].get("augment"),
        eval_batch_size=eval_batch_size(ctx), train_hash=config_hash(ident),
        on_epoch=lambda m: ctx.tracker.log({f"train/{k}": v for k, v in m.items()}), progress=ctx.progress,
    )


def ensure_checkpoint(ctx: RunContext, seed_offset: int = 0, explicit: str | None = None) -> Path:
    """The checkpoint to analyse: ``explicit`` (or ``checkpoint=``) if given; otherwise the
    cached one trained with this exact model/dataset/optim/seed config, trained now if missing."""
    path = explicit if explicit is not None else (ctx.cfg.get("checkpoint") if seed_offset == 0 else None)
    if path:
        p = Path(str(path)).expanduser()
        if not p.is_file():
            raise UserError(f"checkpoint {str(p)!r} does not exist" if not p.exists() else f"checkpoint {str(p)!r} is not a file")
        return p
    key = config_hash(training_identity(ctx, seed_offset))
    run_dir = Path(str(ctx.cfg.paths.cache_dir)) / "train" / key
    final = run_dir / "checkpoints" / "final.pt"
    if final.is_file():
        return final
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"checkpoint cache {str(run_dir)!r} is not writable ({e.strerror or e}); choose another with "
            f"paths.cache_dir=... or pass checkpoint=<file>"
        ) from None
    # Jobs of one sweep may want the same checkpoint: one trains, the others wait for it.
    with open(run_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_file():
            (run_dir / "identity.json").write_text(json.dumps(training_identity(ctx, seed_offset), indent=2, default=str))
            print(f"training a checkpoint into the cache: {run_dir}")
            train_run(ctx, run_dir, seed_offset)
    return final


def check_model_fits_dataset(model: nn.Module, dataset: ImageDataset, name: str) -> None:
    x = torch.zeros(2, dataset.channels, dataset.image_size, dataset.image_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:
        raise UserError(
            f"model {name!r} does not accept {dataset.name!r} images of shape "
            f"{dataset.channels}x{dataset.image_size}x{dataset.image_size} ({' '.join(str(e).split())[:120]})"
        ) from None
    finally:
        model.train(was_training)
    if out.shape[-1] != dataset.num_classes:
        raise UserError(f"model {name!r} has {out.shape[-1]} outputs but dataset {dataset.name!r} has {dataset.num_classes} classes")


def load_for_analysis(ctx: RunContext, path: Path, dataset: ImageDataset) -> tuple[nn.Module, dict[str, Any]]:
    """Model and checkpoint dict, in eval mode on the device, checked against the dataset.

    The model comes from the checkpoint's own config; a bare state_dict uses ``model=``."""
    ckpt = load_checkpoint(path)
    fallback = None if ckpt.get("model_cfg") is not None else ctx.container(ctx.cfg.model)
    model = model_from_checkpoint(ckpt, f"checkpoint {str(path)!r}", fallback)
    name = (ckpt.get("model_cfg") or fallback or {}).get("name", "?")
    check_model_fits_dataset(model, dataset, name)
    return model.to(ctx.device).eval(), ckpt


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensors_sha256(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    import h5py
    import numpy

    import landscape_exp

    return {"landscape_exp": landscape_exp.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "h5py": h5py.__version__}


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
