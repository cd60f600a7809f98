"""The training loop: Adam, cross-entropy on logits, mini-batches, early stopping on validation loss.

Seeded per run (torch and the batch order), so the same inputs give the same model. A `Control`
lets the caller watch progress, cancel between epochs, and cap the wall time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from services.trainer.data import SnapshotData, Split
from services.trainer.errors import JobCancelled
from services.trainer.models import ModelFamily, build_model
from services.trainer.training.hyperparameters import Hyperparameters


@dataclass
class Control:
    """What the loop asks the outside world: should I stop, when is the deadline, whom do I tell."""

    cancelled: Callable[[], bool] = lambda: False
    deadline: float = float("inf")  # time.monotonic() value
    on_epoch: Callable[[int, dict[str, float]], None] | None = None

    def check(self) -> None:
        if self.cancelled():
            raise JobCancelled("cancelled")


@dataclass
class TrainResult:
    model: nn.Module
    hp: Hyperparameters
    best_epoch: int
    epochs_run: int
    stopped_by: str  # "early_stopping", "max_epochs", "budget"
    history: dict[str, list[float]] = field(default_factory=dict)
    val_loss: float = float("inf")
    val_accuracy: float = 0.0
    seconds: float = 0.0


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(split.x), torch.from_numpy(split.y)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy)."""
    if len(y) == 0:
        return float("nan"), float("nan")
    model.eval()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    acc = (logits.argmax(dim=1) == y).float().mean().item()
    return float(loss), float(acc)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(x)).argmax(dim=1).numpy().astype(np.int64)


def train(fam: ModelFamily, data: SnapshotData, hp: Hyperparameters, control: Control | None = None) -> TrainResult:
    control = control or Control()
    gen = seed_everything(hp.seed)
    model = build_model(fam, data.train.x, data.n_classes, hp.width, hp.depth)
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    xt, yt = tensors(data.train)
    # Early stopping watches validation; without one, the training loss.
    xv, yv = tensors(data.validation) if len(data.validation) else (xt, yt)
    history: dict[str, list[float]] = {"train_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": []}
    best_state, best_loss, best_epoch, since_best = None, float("inf"), 0, 0
    stopped_by = "max_epochs"
    start = time.monotonic()
    epoch = 0
    for epoch in range(1, hp.max_epochs + 1):
        control.check()
        model.train()
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(order), hp.batch_size):
            idx = order[i : i + hp.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        tl, ta = evaluate(model, xt, yt)
        vl, va = evaluate(model, xv, yv)
        for k, v in (("train_loss", tl), ("train_accuracy", ta), ("val_loss", vl), ("val_accuracy", va)):
            history[k].append(v)
        if control.on_epoch is not None:
            control.on_epoch(epoch, {"train_loss": tl, "train_accuracy": ta, "val_loss": vl, "val_accuracy": va})
        if vl < best_loss - 1e-6:
            best_loss, best_epoch, since_best = vl, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best >= hp.patience:
                stopped_by = "early_stopping"
                break
        if time.monotonic() >= control.deadline:
            stopped_by = "budget"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    vl, va = evaluate(model, xv, yv)
    return TrainResult(model, hp, best_epoch, epoch, stopped_by, history, vl, va, time.monotonic() - start)
