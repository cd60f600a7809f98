"""Classification metrics and the one combined number that ranks models.

The notes: you care about many metrics, but ML works best when optimising one number, and the
formula will change. So the formula is data (`CombinedMetric.parse`):

* `weighted:accuracy=0.5,macro_f1=0.5` → a weighted average;
* `optimise:macro_f1;min_recall>=0.9,accuracy>=0.95` → thresholds on n−1 metrics while optimising
  the n-th (a model that misses a threshold scores below every model that meets them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.trainer.errors import InvalidRequest

SCALARS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "min_recall")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """accuracy, per-class precision/recall/F1, macro averages, worst-class recall, confusion matrix."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0
    n = max(int(cm.sum()), 1)
    return {
        "accuracy": float(tp.sum() / n),
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "min_recall": float(recall[present].min()) if present.any() else 0.0,
        "per_class": {
            "precision": [float(v) for v in precision],
            "recall": [float(v) for v in recall],
            "f1": [float(v) for v in f1],
            "support": [int(v) for v in actual],
        },
        "confusion_matrix": cm.tolist(),
    }


@dataclass(frozen=True)
class CombinedMetric:
    kind: str  # "weighted" or "optimise"
    weights: dict[str, float] = field(default_factory=dict)
    optimise: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> CombinedMetric:
        kind, _, rest = spec.strip().partition(":")
        try:
            if kind == "weighted":
                weights = {k.strip(): float(v) for k, v in (p.split("=") for p in rest.split(",") if p.strip())}
                cls._known(weights)
                if not weights or sum(weights.values()) <= 0:
                    raise ValueError("weights must be positive")
                return cls("weighted", weights=weights)
            if kind == "optimise":
                target, _, cons = rest.partition(";")
                thresholds = {k.strip(): float(v) for k, v in (p.split(">=") for p in cons.split(",") if p.strip())}
                cls._known({target.strip(): 1.0, **thresholds})
                return cls("optimise", optimise=target.strip(), thresholds=thresholds)
        except ValueError as exc:
            raise InvalidRequest(f"combined metric {spec!r}: {exc}") from None
        raise InvalidRequest(
            f"combined metric {spec!r}: use 'weighted:accuracy=0.5,macro_f1=0.5' or 'optimise:macro_f1;min_recall>=0.9'"
        )

    @staticmethod
    def _known(names: dict[str, float]) -> None:
        unknown = sorted(set(names) - set(SCALARS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {list(SCALARS)}")

    def describe(self) -> str:
        if self.kind == "weighted":
            total = sum(self.weights.values())
            return " + ".join(f"{w / total:.2g}·{k}" for k, w in self.weights.items())
        cons = ", ".join(f"{k} ≥ {v}" for k, v in self.thresholds.items())
        return f"{self.optimise} subject to {cons}" if cons else self.optimise

    def score(self, metrics: dict) -> float:
        if self.kind == "weighted":
            total = sum(self.weights.values())
            return float(sum(w * metrics[k] for k, w in self.weights.items()) / total)
        unmet = self.unmet(metrics)
        # A model missing a threshold ranks below all that meet them (scores in [-1, 0)).
        return float(metrics[self.optimise] - (1.0 if unmet else 0.0))

    def unmet(self, metrics: dict) -> list[str]:
        return [f"{k} {metrics[k]:.4f} < {v}" for k, v in self.thresholds.items() if metrics[k] < v]
