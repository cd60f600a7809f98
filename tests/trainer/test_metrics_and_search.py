"""Metrics, the configurable combined number, and the coarse-to-fine search on a small budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.trainer.data import load_snapshot
from services.trainer.data.sklearn_digits import write_digits_snapshot
from services.trainer.errors import InvalidRequest
from services.trainer.models import family
from services.trainer.models.families import family_defaults
from services.trainer.training.hyperparameters import parse_hyperparameters
from services.trainer.training.loop import Control
from services.trainer.training.metrics import CombinedMetric, classification_metrics
from services.trainer.training.search import SearchSpec, random_search


def test_classification_metrics_on_a_known_example() -> None:
    # The notes' example: 100 cases, 50 positive; the model says yes 50 times, 45 of them right.
    y_true = np.array([1] * 50 + [0] * 50)
    y_pred = np.array([1] * 45 + [0] * 5 + [1] * 5 + [0] * 45)
    m = classification_metrics(y_true, y_pred, 2)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["per_class"]["precision"][1] == pytest.approx(0.9)
    assert m["per_class"]["recall"][1] == pytest.approx(0.9)
    assert m["confusion_matrix"] == [[45, 5], [5, 45]]


def test_combined_metric_formulas() -> None:
    m = {"accuracy": 0.9, "macro_f1": 0.8, "macro_precision": 0.85, "macro_recall": 0.8, "min_recall": 0.6}
    assert CombinedMetric.parse("weighted:accuracy=3,macro_f1=1").score(m) == pytest.approx(0.875)
    strict = CombinedMetric.parse("optimise:macro_f1;min_recall>=0.7")
    loose = CombinedMetric.parse("optimise:macro_f1;min_recall>=0.5,accuracy>=0.85")
    assert loose.score(m) == pytest.approx(0.8)
    assert strict.score(m) < 0 and strict.unmet(m) == ["min_recall 0.6000 < 0.7"]
    with pytest.raises(InvalidRequest, match="unknown metric"):
        CombinedMetric.parse("weighted:auc=1")
    with pytest.raises(InvalidRequest, match="use 'weighted"):
        CombinedMetric.parse("mean")


def test_unknown_hyperparameters_are_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown hyperparameter\(s\) \['learning_rate'\]"):
        parse_hyperparameters({"learning_rate": "0.1"})
    with pytest.raises(InvalidRequest, match="not a int"):
        parse_hyperparameters({"width": "wide"})


def test_coarse_to_fine_search_narrows_around_the_best(tmp_path) -> None:
    torch.set_num_threads(1)
    data = load_snapshot(write_digits_snapshot(tmp_path, "small", limit=400).as_uri())
    fam = family("digits_mlp")
    base = parse_hyperparameters({"max_epochs": "4", "patience": "2", "augment_shift": "0"}, family_defaults(fam))
    spec = SearchSpec(trials=6, rounds=2)
    result = random_search(fam, data, base, spec, CombinedMetric.parse("weighted:accuracy=1"), Control())
    assert [t.round for t in result.trials] == [1, 1, 1, 2, 2, 2]
    assert result.trials[0].hp == base  # the job's own starting point is always tried
    first, second = result.trials[:3], result.trials[3:]
    best_first = sorted(first, key=lambda t: t.val_score)[-1]
    # Round 2 samples a box around round 1's best third (widened 1.5× in log space).
    assert all(best_first.hp.lr / 1.5 - 1e-12 <= t.hp.lr <= best_first.hp.lr * 1.5 + 1e-12 for t in second)
    assert max(t.val_score for t in result.trials) > 0.5
