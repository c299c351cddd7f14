"""Your own network: any nn.Module whose constructor takes the keys of your model YAML."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Two 3x3 convolutions with BatchNorm, global average pooling, a linear classifier."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
