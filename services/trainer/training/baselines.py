"""Baselines on the same split: a lower bound on what the model must beat (majority class, logistic regression)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from services.trainer.data import SnapshotData
from services.trainer.training.metrics import CombinedMetric, classification_metrics


@dataclass(frozen=True)
class BaselineResult:
    name: str
    description: str
    metrics: dict[str, dict]  # split → classification_metrics
    combined: dict[str, float]  # split → combined number


def run_baselines(data: SnapshotData, combined: CombinedMetric, seed: int = 0) -> list[BaselineResult]:
    models = [
        ("majority", "predicts the most frequent training label", DummyClassifier(strategy="most_frequent")),
        (
            "logistic_regression",
            "multinomial logistic regression on the raw features",
            LogisticRegression(max_iter=2000, random_state=seed),
        ),
    ]
    results = []
    for name, description, clf in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(data.train.x, data.train.y)
        metrics = {}
        for split_name in ("train", "validation", "test"):
            split = getattr(data, split_name)
            if len(split) == 0:
                continue
            pred = np.asarray(clf.predict(split.x), dtype=np.int64)
            metrics[split_name] = classification_metrics(split.y, pred, data.n_classes)
        results.append(BaselineResult(name, description, metrics, {s: combined.score(m) for s, m in metrics.items()}))
    return results
