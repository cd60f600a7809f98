"""Overfit a single batch before the real run (the notes' first debugging step), failing fast with a reason.

Two things must hold, or the setup is broken and a long run would waste its budget:

1. the model drives the loss on one batch near zero within a step budget (catches a learning
   rate of 0, frozen parameters, no gradient flow, a loss on the wrong tensor);
2. what it learned from that batch transfers to a held-out batch above chance (catches labels
   unrelated to the features: shuffled or misaligned labels can be memorised but never generalise).
   One batch is little to generalise from on harder inputs (photos, texts: inputs rebuilt from
   their originals rather than carried as features), and when a baseline already found the labels
   predictable (`baseline_accuracy` above chance) they are not unrelated: in both cases a batch that
   does not transfer is reported, not failed; the promotion gate still judges the trained model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from services.projects.spec import materialised
from services.trainer.data import SnapshotData
from services.trainer.errors import OverfitCheckFailed
from services.trainer.models import ModelFamily, build_model
from services.trainer.models.families import UserBuilder
from services.trainer.training.hyperparameters import Hyperparameters
from services.trainer.training.loop import evaluate, seed_everything


@dataclass(frozen=True)
class OverfitCheck:
    batch: int = 64
    max_steps: int = 500
    loss_below: float = 0.05
    heldout: int = 256
    heldout_margin: float = 0.15  # held-out accuracy must beat the majority-class rate by this much


@dataclass(frozen=True)
class OverfitReport:
    steps: int
    initial_loss: float
    final_loss: float
    batch_accuracy: float
    heldout_accuracy: float
    chance: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def overfit_one_batch(
    fam: ModelFamily,
    data: SnapshotData,
    hp: Hyperparameters,
    check: OverfitCheck = OverfitCheck(),
    user_builder: UserBuilder | None = None,
    baseline_accuracy: float | None = None,
) -> OverfitReport:
    """Raise OverfitCheckFailed (with the numbers) unless the model can learn one batch and it transfers."""
    gen = seed_everything(hp.seed)
    n = len(data.train)
    pick = torch.randperm(n, generator=gen)
    batch_idx = pick[: min(check.batch, n)]
    xb = torch.from_numpy(data.train.x)[batch_idx]
    yb = torch.from_numpy(data.train.y)[batch_idx]
    if len(data.validation):
        xh, yh = (
            torch.from_numpy(data.validation.x[: check.heldout]),
            torch.from_numpy(data.validation.y[: check.heldout]),
        )
    else:
        rest = pick[min(check.batch, n) :][: check.heldout]
        xh, yh = torch.from_numpy(data.train.x)[rest], torch.from_numpy(data.train.y)[rest]
    model = build_model(fam, data.project, data.train.x, hp, user_builder)
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr)
    model.train()
    initial = final = float(nn.functional.cross_entropy(model(xb), yb).item())
    steps = 0
    while steps < check.max_steps:
        steps += 1
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        final = float(loss.item())
        if not math.isfinite(final) or final < check.loss_below:
            break
    _, batch_acc = evaluate(model, xb, yb)
    _, held_acc = evaluate(model, xh, yh) if len(yh) else (0.0, float("nan"))
    counts = np.bincount(data.train.y, minlength=data.n_classes)
    chance = float(counts.max() / counts.sum())
    report = OverfitReport(steps, initial, final, batch_acc, held_acc, chance)
    if not math.isfinite(final):
        raise OverfitCheckFailed(
            f"overfit check: the loss became {final} after {steps} steps on one batch: "
            f"the learning rate {hp.lr} is too high or the inputs are not finite"
        )
    if final >= check.loss_below:
        hint = (
            "the loss did not move: learning rate 0, frozen parameters or no gradient reaching the weights"
            if abs(initial - final) < 0.05 * max(initial, 1e-9)
            else "the loss falls too slowly: learning rate too low or the model too small for one batch"
        )
        raise OverfitCheckFailed(
            f"overfit check: could not overfit one batch of {len(yb)}: loss {initial:.3f} → {final:.3f} after "
            f"{steps} steps (needs < {check.loss_below}) with lr={hp.lr}; {hint}"
        )
    predictable = baseline_accuracy is not None and baseline_accuracy >= chance + check.heldout_margin
    hard = data.project is not None and not materialised(data.project.input)
    if len(yh) and held_acc < chance + check.heldout_margin and not (predictable or hard):
        raise OverfitCheckFailed(
            f"overfit check: memorised one batch (loss {final:.3f}) but a held-out batch scores {held_acc:.1%}, "
            f"no better than chance ({chance:.1%} + margin {check.heldout_margin:.0%}): the labels look unrelated "
            "to the features (shuffled or misaligned labels?)"
        )
    return report
