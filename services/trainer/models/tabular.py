"""The tabular family: category embeddings and standardised numbers, fitted on the training split.

The model takes the project's codes (one float per column: the number, the category's index in
the spec, NaN for null; services/preprocessing/tabular.py) and carries every encoder it fitted as
buffers, so the exported graph needs nothing else:

* numeric columns: NaN → the training median, then (x − mean) / std; a nullable column adds a
  0/1 "was null" input;
* category columns: the code → an embedding row through a table fitted on training counts: each
  value seen at least `min_count` times gets its own row, rarer and never-seen values share an
  "other" row, null has its own; embedding width min(16, (rows + 1) // 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from services.projects.spec import TabularInput
from services.trainer.models.layers import he_init

MIN_COUNT = 2
MAX_EMBEDDING = 16


class TabularEncoders(nn.Module):
    def __init__(self, spec: TabularInput, x_train: np.ndarray, min_count: int = MIN_COUNT) -> None:
        super().__init__()
        x = np.asarray(x_train, dtype=np.float64)
        numeric = [i for i, c in enumerate(spec.columns) if c.type != "category"]
        nullable = [i for i in numeric if spec.columns[i].nullable]
        categorical = [i for i, c in enumerate(spec.columns) if c.type == "category"]
        self.register_buffer("numeric_idx", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer("nullable_idx", torch.tensor(nullable, dtype=torch.long))
        cols = x[:, numeric] if numeric else np.zeros((len(x), 0))
        with np.errstate(all="ignore"):
            median = np.nan_to_num(np.nanmedian(cols, axis=0), nan=0.0) if len(cols) else np.zeros(len(numeric))
            filled = np.where(np.isnan(cols), median, cols)
            mean, std = filled.mean(axis=0), filled.std(axis=0)
        self.register_buffer("median", torch.tensor(median, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(np.nan_to_num(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.where(std < 1e-6, 1.0, std), dtype=torch.float32))
        self.categorical_idx = categorical
        self.embeddings = nn.ModuleList()
        self.fitted: dict[str, Any] = {"numeric": {}, "categories": {}}
        for k, i in enumerate(categorical):
            column = spec.columns[i]
            values = column.values or []
            codes = x[:, i]
            counts = np.bincount(codes[~np.isnan(codes)].astype(np.int64), minlength=len(values))
            kept = [v for v in range(len(values)) if counts[v] >= min_count]
            # table[code + 1]: row 0 = null, row 1 = other (rare, unseen, out of range), then one per kept value
            table = np.ones(len(values) + 1, dtype=np.int64)
            table[0] = 0
            for row, v in enumerate(kept):
                table[v + 1] = row + 2
            rows = len(kept) + 2
            self.register_buffer(f"table{k}", torch.tensor(table, dtype=torch.long))
            self.embeddings.append(nn.Embedding(rows, min(MAX_EMBEDDING, (rows + 1) // 2)))
            self.fitted["categories"][column.name] = {
                "embedding_rows": {values[v]: int(table[v + 1]) for v in range(len(values))},
                "null_row": 0,
                "other_row": 1,
                "min_count": min_count,
            }
        for j, i in enumerate(numeric):
            self.fitted["numeric"][spec.columns[i].name] = {
                "median": float(median[j]),
                "mean": float(mean[j]) if len(cols) else 0.0,
                "std": float(self.std[j]),
                "null_indicator": i in nullable,
            }
        self.out_dim = len(numeric) + len(nullable) + sum(e.embedding_dim for e in self.embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        if self.numeric_idx.numel():
            num = x[:, self.numeric_idx]
            missing = torch.isnan(num)
            num = torch.where(missing, self.median.expand_as(num), num)
            parts.append((num - self.mean) / self.std)
        if self.nullable_idx.numel():
            parts.append(torch.isnan(x[:, self.nullable_idx]).to(x.dtype))
        for k, i in enumerate(self.categorical_idx):
            table: torch.Tensor = getattr(self, f"table{k}")
            code = torch.nan_to_num(x[:, i], nan=-1.0)
            index = (code + 1.0).clamp(0.0, float(table.shape[0] - 1)).to(torch.long)
            # A code outside the spec's values (clamped to the last) or fractional still lands on a row;
            # ingest and the gateway refuse such codes before they get here.
            parts.append(self.embeddings[k](table[index]))
        return torch.cat(parts, dim=1)


class TabularMLP(nn.Module):
    def __init__(self, encoders: TabularEncoders, n_classes: int, width: int = 128, depth: int = 2) -> None:
        super().__init__()
        self.encoders = encoders
        layers: list[nn.Module] = []
        d = encoders.out_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
        self.body = nn.Sequential(*layers)
        he_init(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.encoders(x))
