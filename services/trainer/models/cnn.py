"""A small CNN for 8×8 digit images given as 64 row-major features."""

from __future__ import annotations

from torch import nn

from services.trainer.models.layers import Standardize, he_init

SIDE = 8


class DigitsCNN(nn.Module):
    """conv(c) → conv(2c) → 2×2 max-pool → `depth` hidden FC layers of `width` → logits."""

    def __init__(self, norm: Standardize, n_classes: int, width: int = 128, depth: int = 1, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.norm = norm
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        layers: list[nn.Module] = []
        d = 2 * c * (SIDE // 2) ** 2
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
        self.head = nn.Sequential(*layers)
        he_init(self)

    def forward(self, x):  # type: ignore[no-untyped-def]
        z = self.norm(x).reshape(-1, 1, SIDE, SIDE)
        return self.head(self.features(z))
