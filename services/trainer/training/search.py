"""Coarse-to-fine random search over learning rate, width, depth and weight decay, within a budget.

Trial 0 is the job's own starting point (the family's defaults or the hyperparameters asked for), so
a search can only replace it with something better on validation; the rest of round 1 samples the
whole space; each later round samples a box around the best third of the trials so far (log scale
for lr, width and weight decay), widened a little so it can move.
Trials are seeded from the job's seed and their index, so a search that is not cut short by
its time budget is reproducible.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from services.trainer.data import SnapshotData
from services.trainer.errors import TrainingFailed
from services.trainer.models import ModelFamily
from services.trainer.training.hyperparameters import Hyperparameters
from services.trainer.training.loop import Control, TrainResult, predict, train
from services.trainer.training.metrics import CombinedMetric, classification_metrics


@dataclass(frozen=True)
class SearchSpace:
    lr: tuple[float, float] = (1e-4, 1e-2)  # log-uniform
    width: tuple[int, int] = (32, 512)  # log-uniform, rounded
    depth: tuple[int, int] = (1, 3)  # uniform integer
    weight_decay: tuple[float, float] = (1e-6, 1e-2)  # log-uniform


@dataclass(frozen=True)
class SearchSpec:
    trials: int = 8
    rounds: int = 2
    space: SearchSpace = field(default_factory=SearchSpace)


@dataclass
class Trial:
    index: int
    round: int
    hp: Hyperparameters
    val_score: float
    val_accuracy: float
    epochs: int
    seconds: float


@dataclass
class SearchResult:
    best: TrainResult
    trials: list[Trial]
    spec: SearchSpec
    stopped_by: str  # "completed" or "budget"


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _sample(rng: random.Random, space: SearchSpace, base: Hyperparameters, seed: int) -> Hyperparameters:
    return replace(
        base,
        lr=_log_uniform(rng, *space.lr),
        width=round(_log_uniform(rng, *space.width)),
        depth=rng.randint(*space.depth),
        weight_decay=_log_uniform(rng, *space.weight_decay),
        seed=seed,
    )


def _narrow(space: SearchSpace, top: list[Trial], widen: float = 1.5) -> SearchSpace:
    def box(values: list[float], lo: float, hi: float) -> tuple[float, float]:
        a, b = min(values) / widen, max(values) * widen
        return max(lo, a), min(hi, b)

    lrs = [t.hp.lr for t in top]
    widths = [float(t.hp.width) for t in top]
    wds = [max(t.hp.weight_decay, space.weight_decay[0]) for t in top]
    depths = [t.hp.depth for t in top]
    w = box(widths, *space.width)
    return SearchSpace(
        lr=box(lrs, *space.lr),
        width=(int(w[0]), max(int(w[0]), int(w[1]))),
        depth=(max(space.depth[0], min(depths)), min(space.depth[1], max(depths))),
        weight_decay=box(wds, *space.weight_decay),
    )


def random_search(
    fam: ModelFamily,
    data: SnapshotData,
    base: Hyperparameters,
    spec: SearchSpec,
    combined: CombinedMetric,
    control: Control,
    on_trial: Callable[[Trial, int], None] | None = None,
) -> SearchResult:
    """Run up to spec.trials trials in spec.rounds rounds; the best by validation combined number wins."""
    rng = random.Random(base.seed)
    per_round = max(1, math.ceil(spec.trials / max(1, spec.rounds)))
    space = spec.space
    trials: list[Trial] = []
    best: TrainResult | None = None
    best_score = -math.inf
    stopped_by = "completed"
    val = data.validation if len(data.validation) else data.train
    for rnd in range(1, max(1, spec.rounds) + 1):
        if rnd > 1 and trials:
            ranked = sorted(trials, key=lambda t: t.val_score, reverse=True)
            space = _narrow(space, ranked[: max(1, len(ranked) // 3)])
        for _ in range(per_round):
            if len(trials) >= spec.trials:
                break
            if time.monotonic() >= control.deadline and trials:
                stopped_by = "budget"
                break
            control.check()
            index = len(trials)
            hp = base if index == 0 else _sample(rng, space, base, seed=base.seed + index)
            result = train(fam, data, hp, Control(control.cancelled, control.deadline))
            metrics = classification_metrics(val.y, predict(result.model, val.x), data.n_classes)
            score = combined.score(metrics)
            trial = Trial(index, rnd, hp, score, metrics["accuracy"], result.epochs_run, result.seconds)
            trials.append(trial)
            if score > best_score:
                best, best_score = result, score
            if on_trial is not None:
                on_trial(trial, spec.trials)
        if stopped_by == "budget":
            break
    if best is None:
        raise TrainingFailed("search ran no trial within its budget")
    return SearchResult(best, trials, spec, stopped_by)
