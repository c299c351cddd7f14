"""Datasets as uint8 image tensors, loaded with torchvision's real dataset classes.

Every dataset becomes two :class:`ImageSplit` s (uint8 ``(N, C, H, W)`` images, int64 labels),
so evaluation can keep them on the device and normalize on the fly. Evaluation data is never
augmented (as in the paper); training augmentation (random crop + horizontal flip) is applied
per batch on the device.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape_exp.errors import UserError, choice_error

DATASETS = ("digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")


@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8 (N, C, H, W)
    targets: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSplit":
        return ImageSplit(self.images[index], self.targets[index])


@dataclass
class ImageDataset:
    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def split(self, name: str) -> ImageSplit:
        if name == "train":
            return self.train
        if name == "test":
            return self.test
        raise choice_error("data split", name, ("train", "test"))


def _from_hwc(arr: np.ndarray) -> torch.Tensor:
    """(N, H, W[, C]) uint8 array -> (N, C, H, W) uint8 tensor."""
    t = torch.as_tensor(np.ascontiguousarray(arr))
    if t.dim() == 3:
        return t.unsqueeze(1).contiguous()
    return t.permute(0, 3, 1, 2).contiguous()


def _digits(seed: int, test_fraction: float) -> tuple[ImageSplit, ImageSplit]:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download); a fixed seeded split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixel values are 0..16; scale to the uint8 range the rest of the pipeline expects.
    images = torch.as_tensor(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    targets = torch.as_tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(targets) * test_fraction))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return ImageSplit(images[train_idx], targets[train_idx]), ImageSplit(images[test_idx], targets[test_idx])


def _synthetic(cfg: Mapping) -> tuple[ImageSplit, ImageSplit]:
    """Seeded random images labelled by a fixed random linear teacher, so they are learnable."""
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    c, s, k = int(cfg["channels"]), int(cfg["image_size"]), int(cfg["num_classes"])
    n_train, n_test = int(cfg.get("num_train", 512)), int(cfg.get("num_test", 128))
    if n_train < 1 or n_test < 1:
        raise UserError(f"synthetic dataset needs num_train, num_test >= 1 (got {n_train}, {n_test})")
    images = torch.randint(0, 256, (n_train + n_test, c, s, s), generator=gen, dtype=torch.uint8)
    teacher = torch.randn(c * s * s, k, generator=gen)
    x = images.reshape(len(images), -1).float() / 255.0
    targets = ((x - x.mean(0)) @ teacher).argmax(1)
    return ImageSplit(images[:n_train], targets[:n_train]), ImageSplit(images[n_train:], targets[n_train:])


def _torchvision(name: str, root: Path, download: bool) -> tuple[ImageSplit, ImageSplit]:
    import torchvision.datasets as tvd

    def get(train: bool) -> ImageSplit:
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            ds = cls(str(root), train=train, download=download)
            return ImageSplit(_from_hwc(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64))
        if name in ("mnist", "fashion_mnist"):
            cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
            ds = cls(str(root), train=train, download=download)
            return ImageSplit(_from_hwc(ds.data.numpy()), ds.targets.to(torch.int64))
        if name == "svhn":
            ds = tvd.SVHN(str(root / "svhn"), split="train" if train else "test", download=download)
            return ImageSplit(torch.as_tensor(ds.data), torch.as_tensor(ds.labels, dtype=torch.int64))
        raise choice_error("dataset", name, DATASETS)

    try:
        return get(True), get(False)
    except UserError:
        raise
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError... all mean "not here"
        if isinstance(e, pickle.UnpicklingError):  # torchvision's own torch.load(weights_only=True)
            from landscape_exp.checkpoint import refusal_reason

            reason = f"a file there was refused: it holds objects other than tensors ({refusal_reason(e)})"
        else:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        how = "download failed" if download else "download is off (dataset.download=false)"
        raise UserError(
            f"dataset {name!r} is not present under {str(root)!r} and {how} ({reason}); "
            f"put a copy there or allow network access to the dataset's host"
        ) from None


def load_dataset(cfg: Mapping) -> ImageDataset:
    """Load the dataset described by a ``dataset`` config node (see ``conf/dataset``)."""
    name = str(cfg.get("name"))
    if name not in DATASETS:
        raise choice_error("dataset", name, DATASETS)
    if name == "digits":
        train, test = _digits(int(cfg.get("split_seed", 0)), float(cfg.get("test_fraction", 0.2)))
    elif name == "synthetic":
        train, test = _synthetic(cfg)
    else:
        root = Path(str(cfg.get("root", "data"))).expanduser()
        train, test = _torchvision(name, root, bool(cfg.get("download", True)))
    channels = int(train.images.shape[1])
    if cfg.get("raw", False):
        mean, std = (0.0,) * channels, (1.0,) * channels
    elif cfg.get("mean") is not None and cfg.get("std") is not None:
        mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    else:
        # Statistics of the training split, for datasets without published constants.
        x = train.images.float() / 255.0
        mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-6) for v in x.std(dim=(0, 2, 3)))
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"dataset {name!r}: mean/std have {len(mean)}/{len(std)} entries for {channels} channels")
    num_classes = int(cfg.get("num_classes", int(train.targets.max()) + 1))
    return ImageDataset(name, train, test, num_classes, mean, std)


def eval_subset(split: ImageSplit, data_split: int = 1, split_idx: int = 0, seed: int = 0) -> ImageSplit:
    """The paper's ``--data_split/--split_idx``: part ``split_idx`` of ``data_split`` equal parts
    of a seeded permutation (``data_split=1`` keeps everything, in the original order)."""
    if data_split < 1 or not 0 <= split_idx < data_split:
        raise UserError(
            f"bad eval subset data_split={data_split} split_idx={split_idx}: need data_split >= 1 "
            f"and 0 <= split_idx < data_split"
        )
    if data_split == 1:
        return split
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(perm.chunk(data_split)[split_idx].sort().values)


class DeviceData:
    """A split resident on the device as uint8, normalized on the fly per batch."""

    def __init__(
        self,
        split: ImageSplit,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device | str,
        *,
        channels_last: bool = False,
    ):
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.targets = split.targets.to(self.device)
        m = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # x = (u/255 - m)/s = u * scale + shift, one fused multiply-add per batch.
        self._scale = 1.0 / (255.0 * s)
        self._shift = -m / s
        self.channels_last = channels_last

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self._shift, images_u8.float(), self._scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        for start in range(0, n, batch_size):
            yield self.normalize(self.images[start : start + batch_size]), self.targets[start : start + batch_size]


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, *, crop_padding: int = 0, hflip: bool = False
) -> torch.Tensor:
    """Random crop (zero padding ``crop_padding``) and horizontal flip, independently per sample.

    ``images`` is ``(B, C, H, W)`` on any device; randomness comes from a CPU ``generator`` so
    training is reproducible across devices.
    """
    b, c, h, w = images.shape
    out = images
    if crop_padding > 0:
        p = crop_padding
        padded = torch.nn.functional.pad(out, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(images.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(images.device)
        rows = (oy[:, None] + torch.arange(h, device=images.device)[None, :])  # (B, H)
        cols = (ox[:, None] + torch.arange(w, device=images.device)[None, :])  # (B, W)
        bi = torch.arange(b, device=images.device)[:, None, None, None]
        ci = torch.arange(c, device=images.device)[None, :, None, None]
        out = padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
    if hflip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out
