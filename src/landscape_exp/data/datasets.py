"""Datasets as uint8 image tensors, loaded with torchvision's real dataset classes, any other
torchvision dataset class, an image folder, or the researcher's own dataset factory.

Every dataset becomes two :class:`ImageSplit` s (uint8 ``(N, C, H, W)`` images, int64 labels),
so evaluation can keep them on the device and normalize on the fly
(:class:`landscape_exp.data.device.DeviceData`). Evaluation data is never augmented (as in the
paper); training augmentation (random crop + horizontal flip) is applied per batch on the device.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape_exp.config.choices import DATASETS
from landscape_exp.config.reader import Section
from landscape_exp.errors import UserError, choice_error


@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8 (N, C, H, W)
    targets: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, index: torch.Tensor) -> ImageSplit:
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


def _synthetic(cfg: Section) -> tuple[ImageSplit, ImageSplit]:
    """Seeded random images labelled by a fixed random linear teacher, so they are learnable."""
    gen = torch.Generator().manual_seed(cfg.int("seed"))
    c, s, k = cfg.int("channels", 1), cfg.int("image_size", 1), cfg.int("num_classes", 1)
    n_train, n_test = cfg.int("num_train"), cfg.int("num_test")
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

    return _fetch(name, root, download, get)


def _fetch(name: str, root: Path, download: bool, get: Callable[[bool], ImageSplit]) -> tuple[ImageSplit, ImageSplit]:
    """Both splits from ``get(train)``; a dataset that is absent (and cannot be downloaded) is one line."""
    try:
        return get(True), get(False)
    except UserError:
        raise
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError... all mean "not here"
        if isinstance(e, pickle.UnpicklingError):  # torchvision's own torch.load(weights_only=True)
            from landscape_exp.io.checkpoint import refusal_reason

            reason = f"a file there was refused: it holds objects other than tensors ({refusal_reason(e)})"
        else:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        how = "download failed" if download else "download is off (dataset.download=false)"
        raise UserError(
            f"dataset {name!r} is not present under {str(root)!r} and {how} ({reason}); "
            f"put a copy there or allow network access to the dataset's host"
        ) from None


def _image_u8(img: object) -> np.ndarray:
    """One image (PIL, uint8 array HW/HWC, or tensor CHW: uint8, or float in [0, 1]) as uint8 HWC."""
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.dtype != torch.uint8:
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        arr = t.numpy()
        return arr[:, :, None] if arr.ndim == 2 else np.moveaxis(arr, 0, -1)
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise UserError(f"dataset images must be PIL images, uint8 arrays or tensors; got an array of {arr.dtype}")
    return arr[:, :, None] if arr.ndim == 2 else arr


def split_from_dataset(ds: object, what: str) -> ImageSplit:
    """Any map-style dataset of ``(image, label)`` pairs as an :class:`ImageSplit` (all images
    must share one shape: an image folder is resized by its transform first)."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise UserError(f"{what} is not a map-style dataset (it has no len()); return a torch Dataset") from None
    if n == 0:
        raise UserError(f"{what} is empty")
    images, labels = [], []
    for i in range(n):
        item = ds[i]  # type: ignore[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise UserError(f"{what}[{i}] is not an (image, label) pair")
        images.append(_image_u8(item[0]))
        labels.append(int(item[1]))
        if images[-1].shape != images[0].shape:
            raise UserError(f"{what}: image {i} has shape {images[-1].shape}, image 0 {images[0].shape}; "
                            "all images must have one size (resize them in the dataset's transform)")
    return ImageSplit(_from_hwc(np.stack(images)), torch.as_tensor(labels, dtype=torch.int64))


def _torchvision_class(cfg: Section, root: Path, download: bool) -> tuple[ImageSplit, ImageSplit]:
    """Any class of ``torchvision.datasets`` by name (``dataset.class``), train and test splits
    from its ``train=`` or ``split=`` argument."""
    import torchvision.datasets as tvd

    name = cfg.str("class")
    cls = getattr(tvd, name, None)
    if not isinstance(cls, type):
        raise choice_error("torchvision dataset class", name, [n for n in tvd.__all__ if n[0].isupper()])
    extra = dict(cfg.data.get("kwargs") or {})  # optional: the class's own arguments

    def get(train: bool) -> ImageSplit:
        try:
            ds = cls(str(root), train=train, download=download, **extra)
        except TypeError:  # classes with split="train"/"test" (SVHN, STL10, ...)
            ds = cls(str(root), split="train" if train else "test", download=download, **extra)
        return split_from_dataset(ds, f"torchvision dataset {name}")

    return _fetch(f"torchvision.datasets.{name}", root, download, get)


def _image_folder(cfg: Section) -> tuple[ImageSplit, ImageSplit]:
    """``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (torchvision ImageFolder), resized
    to ``image_size`` (shorter side, then centre crop), in ``channels`` 1 (grey) or 3."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    root, size, channels = Path(cfg.str("root")).expanduser(), cfg.int("image_size", 1), cfg.int("channels")
    if channels not in (1, 3):
        raise UserError(f"dataset.channels={channels} must be 1 or 3 for an image folder")
    tf = T.Compose([T.Resize(size), T.CenterCrop(size), *([T.Grayscale()] if channels == 1 else [])])
    out = []
    for part in ("train", "test"):
        d = root / part
        if not d.is_dir():
            raise UserError(f"image folder {str(d)!r} does not exist; dataset.root must hold train/<class>/ and test/<class>/")
        ds = tvd.ImageFolder(str(d), transform=tf)  # its loader gives RGB PIL images
        out.append(split_from_dataset(ds, f"image folder {str(d)!r}"))
    return out[0], out[1]


def _custom(cfg: Section) -> tuple[ImageSplit, ImageSplit]:
    """``dataset.factory=<pkg.module.function>`` (the user's own code) called with ``dataset.kwargs``,
    returning ``(train, test)`` datasets of ``(image, label)`` pairs."""
    from landscape_exp.io.user_code import import_callable

    factory = cfg.data.get("factory")
    if not factory or factory == "???":
        raise UserError("dataset=custom needs dataset.factory=<pkg.module.function> returning (train, test) datasets")
    made = import_callable(str(factory), "dataset.factory")(**dict(cfg.data.get("kwargs") or {}))
    if not isinstance(made, (tuple, list)) or len(made) != 2:
        raise UserError(f"dataset.factory={factory!r} must return a (train, test) pair of datasets")
    return split_from_dataset(made[0], f"{factory} train"), split_from_dataset(made[1], f"{factory} test")


def random_labels(split: ImageSplit, fraction: float, num_classes: int, seed: int = 0) -> ImageSplit:
    """``round(fraction * N)`` training labels, chosen by a seeded permutation, replaced by uniform
    random classes (Zhang et al. 2017, "Understanding deep learning requires rethinking
    generalization"; the original tool took user data loaders for this)."""
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"dataset.random_labels={fraction} must be a fraction in [0, 1]")
    n = len(split)
    k = int(round(fraction * n))
    if k == 0:
        return split
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[:k]
    targets = split.targets.clone()
    targets[idx] = torch.randint(0, num_classes, (k,), generator=gen)
    return ImageSplit(split.images, targets)


# The keys a dataset section may leave out, each with the value that means "off" (so a config
# written before the key existed, or a library call, reads as it did). Every other key a loader
# reads is required: conf/dataset/<name>.yaml sets it, and a missing one is a one-line error.
OPTIONAL_KEYS: Mapping[str, Any] = {"raw": False, "mean": None, "std": None, "random_labels": 0.0, "num_classes": None}


def load_dataset(cfg: Mapping) -> ImageDataset:
    """Load the dataset described by a ``dataset`` config node (see ``conf/dataset``)."""
    n = Section(dict(OPTIONAL_KEYS) | dict(cfg), "dataset")
    name = n.str("name", choices=DATASETS)
    if name == "digits":
        train, test = _digits(n.int("split_seed"), n.float("test_fraction"))
    elif name == "synthetic":
        train, test = _synthetic(n)
    elif name == "image_folder":
        train, test = _image_folder(n)
    elif name == "custom":
        train, test = _custom(n)
    else:
        root = Path(n.str("root")).expanduser()
        if name == "torchvision":
            train, test = _torchvision_class(n, root, n.bool("download"))
        else:
            train, test = _torchvision(name, root, n.bool("download"))
    channels = int(train.images.shape[1])
    if n.bool("raw"):
        mean, std = (0.0,) * channels, (1.0,) * channels
    elif n.raw("mean") is not None and n.raw("std") is not None:
        mean, std = tuple(float(v) for v in n.raw("mean")), tuple(float(v) for v in n.raw("std"))
    else:
        # Statistics of the training split, for datasets without published constants.
        x = train.images.float() / 255.0
        mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-6) for v in x.std(dim=(0, 2, 3)))
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"dataset {name!r}: mean/std have {len(mean)}/{len(std)} entries for {channels} channels")
    num_classes = n.int("num_classes", 1, null=True) or int(max(int(train.targets.max()), int(test.targets.max())) + 1)
    train = random_labels(train, n.float("random_labels"), num_classes)
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


_DATASETS: dict[str, ImageDataset] = {}


def dataset_for(dataset_cfg: dict[str, Any] | Any) -> ImageDataset:
    """The configured dataset (memoized per process: a sweep job loads it once)."""
    key = json.dumps(dict(dataset_cfg), sort_keys=True, default=str)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(dict(dataset_cfg))
    return _DATASETS[key]
