"""A split resident on the device as uint8, normalized per batch with one fused multiply-add, and
the training augmentation applied per batch there (no per-sample loader: docs/engine.md)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from landscape_exp.data.datasets import ImageSplit


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
