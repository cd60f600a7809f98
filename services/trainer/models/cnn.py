"""Convolutional families for images: a small CNN for tiny images, and an image CNN of any input size."""

from __future__ import annotations

import torch
from torch import nn

from services.trainer.models.layers import Standardize, he_init


class SmallCNN(nn.Module):
    """conv(c) → conv(2c) → 2×2 max-pool → `depth` hidden FC layers of `width` → logits.

    For tiny images (digits' 8×8): no further pooling, so the FC head sees every position. Takes
    the image as C·H·W values in a row (`layout: flat`) or as C×H×W; `norm` is fitted per value."""

    def __init__(
        self,
        norm: Standardize,
        shape: tuple[int, int, int],
        n_classes: int,
        width: int = 128,
        depth: int = 1,
        channels: int = 16,
    ) -> None:
        super().__init__()
        c = channels
        self.shape = shape
        self.norm = norm
        self.features = nn.Sequential(
            nn.Conv2d(shape[0], c, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        layers: list[nn.Module] = []
        d = 2 * c * (shape[1] // 2) * (shape[2] // 2)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
        self.head = nn.Sequential(*layers)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x.flatten(1)).reshape(-1, *self.shape)
        return self.head(self.features(z))


class ImageCNN(nn.Module):
    """An image CNN for any input size: blocks of conv-BN-ReLU-pool (channels doubling from
    `channels`, at most 128) until the map is about 4×4, global average pooling, `depth` hidden FC
    layers of `width`, logits. Inputs are standardised per channel with training statistics."""

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        shape: tuple[int, int, int],
        n_classes: int,
        width: int = 128,
        depth: int = 1,
        channels: int = 16,
    ) -> None:
        super().__init__()
        self.shape = shape
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("std", std.clamp_min(1e-3).reshape(1, -1, 1, 1).float())
        blocks: list[nn.Module] = []
        c_in, c, side = shape[0], channels, min(shape[1], shape[2])
        while True:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
            if side <= 4 or len(blocks) >= 3 * 6:
                break
            blocks.append(nn.MaxPool2d(2))
            side //= 2
            c = min(2 * c, 128)
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        layers: list[nn.Module] = []
        d = c_in
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
        self.head = nn.Sequential(*layers)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.reshape(-1, *self.shape) - self.mean) / self.std
        return self.head(self.features(z))
