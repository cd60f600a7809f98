"""Baselines on the same split: a lower bound on what the model must beat (majority class, logistic regression).

The logistic regression sees what a person would hand a linear model for each input kind:
tiny images their pixels; tables their columns (numbers imputed and standardised, categories
one-hot); larger images and texts the hand-made features the monitor also tests (per-channel and
layout statistics, length and character statistics, each with a fixed hashing embedding).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from services.projects.spec import TabularInput, materialised
from services.trainer.data import SnapshotData
from services.trainer.training.metrics import CombinedMetric, classification_metrics


@dataclass(frozen=True)
class BaselineResult:
    name: str
    description: str
    metrics: dict[str, dict]  # split → classification_metrics
    combined: dict[str, float]  # split → combined number


def _linear(data: SnapshotData, seed: int) -> tuple[str, object, str]:
    """(description, classifier, which inputs): logistic regression on what suits the project's input."""
    lr = LogisticRegression(max_iter=2000, random_state=seed)
    spec = data.project.input if data.project is not None else None
    if isinstance(spec, TabularInput):
        numeric = [i for i, c in enumerate(spec.columns) if c.type != "category"]
        categorical = [i for i, c in enumerate(spec.columns) if c.type == "category"]
        prep = ColumnTransformer(
            [
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                (
                    "categorical",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value=-1.0), OneHotEncoder(handle_unknown="ignore")
                    ),
                    categorical,
                ),
            ]
        )
        return (
            "logistic regression on the columns (imputed, standardised, one-hot)",
            Pipeline([("prep", prep), ("lr", lr)]),
            "x",
        )
    if spec is None or materialised(spec):
        return "multinomial logistic regression on the raw features", lr, "x"
    return (
        f"logistic regression on the standardised {spec.kind} statistics (the monitor's features)",
        make_pipeline(StandardScaler(), lr),
        "features",
    )


def _inputs(split, which: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    x = split.features if which == "features" and split.features is not None else split.x
    return np.asarray(x).reshape(len(x), -1)


def run_baselines(data: SnapshotData, combined: CombinedMetric, seed: int = 0) -> list[BaselineResult]:
    description, linear, which = _linear(data, seed)
    models = [
        ("majority", "predicts the most frequent training label", DummyClassifier(strategy="most_frequent"), "x"),
        ("logistic_regression", description, linear, which),
    ]
    results = []
    for name, description, clf, inputs in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(_inputs(data.train, inputs), data.train.y)  # type: ignore[attr-defined]
        metrics = {}
        for split_name in ("train", "validation", "test"):
            split = getattr(data, split_name)
            if len(split) == 0:
                continue
            pred = np.asarray(clf.predict(_inputs(split, inputs)), dtype=np.int64)  # type: ignore[attr-defined]
            metrics[split_name] = classification_metrics(split.y, pred, data.n_classes)
        results.append(BaselineResult(name, description, metrics, {s: combined.score(m) for s, m in metrics.items()}))
    return results
