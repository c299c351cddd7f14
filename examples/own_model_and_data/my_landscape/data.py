"""Your own data: a function returning (train, test) datasets of (image, label) pairs.

Here: 16x16 grey images of stripes; the class is the stripes' orientation (4 classes), with a
random phase and noise, so a small CNN learns it in a few epochs. Any torch Dataset works the
same way (PIL images, uint8 arrays, or tensors in [0, 1])."""

from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset


def make_stripes(n_train: int = 512, n_test: int = 256, image_size: int = 16, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    labels = torch.randint(0, 4, (n,), generator=gen)
    angle = labels.float() * (math.pi / 4)
    phase = torch.rand(n, generator=gen) * 2 * math.pi
    coords = torch.arange(image_size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    proj = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    images = 0.5 + 0.4 * torch.sin(proj * 1.2 + phase[:, None, None])
    images = (images + 0.1 * torch.randn(images.shape, generator=gen)).clamp(0, 1).unsqueeze(1)  # (N, 1, H, W) in [0, 1]
    return TensorDataset(images[:n_train], labels[:n_train]), TensorDataset(images[n_train:], labels[n_train:])
