"""The training loop: Adam, cross-entropy on logits, mini-batches, early stopping on validation loss.

Seeded per run (torch and the batch order), so the same inputs give the same model. A `Control`
lets the caller watch progress, cancel between epochs, and cap the wall time.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from services.trainer.data import SnapshotData, Split
from services.trainer.errors import JobCancelled
from services.trainer.models import ModelFamily, build_model
from services.trainer.models.layers import Ensemble
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


def shift_images(x: torch.Tensor, side: int, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to max_shift pixels in x and y, filling with background (0)."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    img = x.reshape(n, 1, side, side)
    pad = nn.functional.pad(img, (max_shift,) * 4)
    dev = x.device
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).to(dev)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).to(dev)
    ar = torch.arange(side, device=dev)
    rows = (dy[:, None] + ar[None, :])[:, :, None].expand(n, side, side)
    cols = (dx[:, None] + ar[None, :])[:, None, :].expand(n, side, side)
    out = pad[torch.arange(n, device=dev)[:, None, None], 0, rows, cols]
    return out.reshape(n, side * side)


def device() -> torch.device:
    """CUDA when present (the GPU of this rank under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def distributed() -> tuple[int, int]:
    """(rank, world size); (0, 1) unless torchrun started several processes with a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# Seeds of an ensemble's members: far apart, so no member repeats another's initialisation.
MEMBER_SEED_STRIDE = 7919


def train(fam: ModelFamily, data: SnapshotData, hp: Hyperparameters, control: Control | None = None) -> TrainResult:
    """Train one model, or `hp.ensemble` members from different seeds served as one (`Ensemble`).

    An ensemble trades training time for variance: on small data a single network's accuracy
    moves by a point or two with its initialisation; the mean of a few moves much less."""
    control = control or Control()
    if hp.ensemble <= 1:
        return _train_one(fam, data, hp, control)
    start = time.monotonic()
    members = [
        _train_one(fam, data, replace(hp, seed=hp.seed + MEMBER_SEED_STRIDE * k, ensemble=1), control)
        for k in range(hp.ensemble)
    ]
    model = Ensemble([m.model for m in members]).eval()
    xv, yv = tensors(data.validation) if len(data.validation) else tensors(data.train)
    vl, va = evaluate(model, xv, yv)
    first = members[0]
    return TrainResult(
        model,
        hp,
        first.best_epoch,
        sum(m.epochs_run for m in members),
        first.stopped_by,
        first.history,  # the first member's curves stand for the others in the report
        vl,
        va,
        time.monotonic() - start,
    )


def _train_one(fam: ModelFamily, data: SnapshotData, hp: Hyperparameters, control: Control) -> TrainResult:
    """Train one network. Under torchrun (several ranks) the model is wrapped in DistributedDataParallel
    and each rank takes its share of every epoch's batches; every rank ends with the same weights."""
    gen = seed_everything(hp.seed)
    dev = device()
    rank, world = distributed()
    model = build_model(fam, data.train.x, data.n_classes, hp.width, hp.depth).to(dev)
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    xt, yt = (t.to(dev) for t in tensors(data.train))
    # Early stopping watches validation; without one, the training loss.
    xv, yv = (t.to(dev) for t in tensors(data.validation)) if len(data.validation) else (xt, yt)
    history: dict[str, list[float]] = {"train_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": []}
    best_state, best_loss, best_epoch, since_best = None, float("inf"), 0, 0
    stopped_by = "max_epochs"
    start = time.monotonic()
    epoch = 0
    for epoch in range(1, hp.max_epochs + 1):
        control.check()
        model.train()
        order = torch.randperm(len(yt), generator=gen)
        step = hp.batch_size * world
        for i in range(0, len(order) - (len(order) % step if world > 1 else 0), step):
            idx = order[i : i + step][rank::world].to(dev)
            opt.zero_grad(set_to_none=True)
            xb = shift_images(xt[idx], fam.image_side, hp.augment_shift, gen) if fam.image_side else xt[idx]
            loss = nn.functional.cross_entropy(net(xb), yt[idx])
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
    model = model.cpu().eval()
    xv, yv = xv.cpu(), yv.cpu()
    vl, va = evaluate(model, xv, yv)
    return TrainResult(model, hp, best_epoch, epoch, stopped_by, history, vl, va, time.monotonic() - start)
