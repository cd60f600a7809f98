"""The demo's data: scikit-learn's digits (shipped in the package, nothing downloaded), split into
labelled examples and live traffic, shifted digits, and the shapes the ingest service accepts."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits

from services.events import new_meta
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.preprocessing.digits import features_to_png, sklearn_digits_features
from services.preprocessing.shifts import Shift, apply_shift, chain, noise, rotation

# The "new camera": rotated and noisier. Strong enough that a model trained on clean digits loses
# accuracy and the monitor sees it within a few hundred predictions.
DEMO_SHIFT: Shift = chain(rotation(20.0), noise(0.1))
SHIFT_NAME = "rotation 20° + Gaussian noise σ=0.1"

LS_PROJECT = {
    "id": 1,
    "title": "digits",
    "label_config": "<View><Image name='image' value='$image'/><Choices name='digit' toName='image'/></View>",
}


@dataclass
class Digits:
    """Labelled examples (for ingest) and held-out traffic (never trained on)."""

    label_x: np.ndarray
    label_y: np.ndarray
    traffic_x: np.ndarray
    traffic_y: np.ndarray
    run: str  # the example ids' prefix: a demo's stack starts empty, so the seed alone names a run

    @classmethod
    def load(cls, n_labels: int, seed: int) -> Digits:
        """Which digits are labelled and which are held out as live traffic follows the seed."""
        digits = load_digits()
        x = sklearn_digits_features(digits.images)
        y = digits.target.astype(int)
        order = np.random.default_rng(seed).permutation(len(x))
        x, y = x[order], y[order]
        n_labels = min(n_labels, len(x) - 300)
        return cls(x[:n_labels], y[:n_labels], x[n_labels:], y[n_labels:], f"s{seed}")

    def shifted(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """n shifted rows drawn (with replacement) from the traffic split, and their true labels."""
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(self.traffic_x), n)
        return apply_shift(DEMO_SHIFT, self.traffic_x[idx], rng), self.traffic_y[idx]


def png_b64(features: np.ndarray) -> str:
    return base64.b64encode(features_to_png(features)).decode()


def label_studio_payload(x: np.ndarray, y: np.ndarray, first_id: int, prefix: str) -> dict:
    """One ANNOTATIONS_CREATED webhook for a batch of annotated tasks (what Label Studio posts)."""
    tasks, annotations = [], []
    for i, (features, label) in enumerate(zip(x, y, strict=True)):
        task_id = first_id + i
        tasks.append(
            {
                "id": task_id,
                "data": {"image": "data:image/png;base64," + png_b64(features), "example_id": f"{prefix}-{task_id}"},
            }
        )
        annotations.append(
            {
                "id": task_id,
                "task": task_id,
                "result": [
                    {
                        "id": f"r{task_id}",
                        "type": "choices",
                        "from_name": "digit",
                        "to_name": "image",
                        "value": {"choices": [str(label)]},
                    }
                ],
                "was_cancelled": False,
                "completed_by": 1,
                "updated_at": "2026-11-28T00:00:00Z",
            }
        )
    return {"action": "ANNOTATIONS_CREATED", "annotation": annotations, "task": tasks, "project": LS_PROJECT}


def raw_label(features: np.ndarray, label: int, example_id: str) -> ev.RawLabel:
    """A RawLabel for `flywheel.labels.raw`, as an external labelling tool would produce it."""
    return ev.RawLabel(
        meta=new_meta("flywheel-demo"),
        example_id=example_id,
        label=str(label),
        annotator="demo-kafka",
        data=features_to_png(features),
        content_type="image/png",
    )


def native_labels(x: np.ndarray, y: np.ndarray, prefix: str) -> dict:
    """A `POST /v1/labels` batch with features (how a labelling team's tool sends new-camera labels)."""
    return {
        "labels": [
            {"example_id": f"{prefix}-{i}", "label": str(label), "annotator": "demo-team", "features": f.tolist()}
            for i, (f, label) in enumerate(zip(x, y, strict=True))
        ]
    }
