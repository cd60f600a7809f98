"""Layers shared by the model families: input standardisation, the export-time softmax, ensembles."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / std with the training set's statistics stored as buffers (exported with the model).

    Features that never vary in training (a digit's always-empty corners) get std 1, not 0.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        std = np.where(std < 1e-3, 1.0, std)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardize:
        return cls(x.mean(axis=0), x.std(axis=0))


class WithSoftmax(nn.Module):
    """Wrap a logits model so the exported graph outputs probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


class Ensemble(nn.Module):
    """Members trained from different seeds, answering together: log of their mean probabilities, so
    the export's softmax gives exactly the mean of the members' probabilities."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), dim=-1) for m in self.members]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-12))


def he_init(module: nn.Module) -> None:
    """He et al. normal init for ReLU layers, zero biases (the notes' sensible default)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
