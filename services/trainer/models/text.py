"""The text baseline family: hashed n-gram counts → TF-IDF (fitted) → L2 norm → a linear or MLP head.

The input is services/preprocessing/text.py's hashed bag of n-grams; the inverse document
frequencies are fitted on the training split and exported as a buffer, so the served graph
weights terms exactly as in training. `depth` 0 is a linear model (multinomial logistic
regression on TF-IDF), more adds ReLU layers of `width`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from services.trainer.models.layers import he_init


class TextMLP(nn.Module):
    def __init__(self, x_train: np.ndarray, n_classes: int, width: int = 128, depth: int = 1) -> None:
        super().__init__()
        counts = np.asarray(x_train, dtype=np.float64)
        df = (counts > 0).sum(axis=0)
        idf = np.log((1.0 + len(counts)) / (1.0 + df)) + 1.0
        self.register_buffer("idf", torch.tensor(idf, dtype=torch.float32))
        layers: list[nn.Module] = []
        d = counts.shape[1]
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
        self.body = nn.Sequential(*layers)
        he_init(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tfidf = torch.log1p(x.clamp_min(0.0)) * self.idf
        norm = tfidf.norm(dim=1, keepdim=True).clamp_min(1e-6)
        return self.body(tfidf / norm)
