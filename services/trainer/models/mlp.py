"""A fully connected ReLU network on a flat input (a tiny image's pixels)."""

from __future__ import annotations

from torch import nn

from services.trainer.models.layers import Standardize, he_init


class MLP(nn.Module):
    def __init__(self, norm: Standardize, in_dim: int, n_classes: int, width: int = 128, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
        self.norm = norm
        self.body = nn.Sequential(*layers)
        he_init(self.body)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.body(self.norm(x.flatten(1)))
