"""What the demo runs: data sizes, the model family and its hyperparameters, traffic, the seed.

The family, the hyperparameters and the data size were chosen by measurement (`make demo-seeds`): v1
must beat logistic regression by a clear margin on every seed, not on a lucky one. The quick story
labels as many digits as the full one (with 1,200, one seed of 20 beat logistic regression by only
0.0002); it is quicker by skipping the search and shortening the load and the canary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODEL = "digits"
# Measured over 20 seeds (`make demo-seeds`): one small CNN's test accuracy moves by a point or two
# with its initialisation and lost to logistic regression on 3 seeds of 20; the mean of five CNNs
# trained from different seeds (one served model) beats it on every seed. Shift augmentation hurt
# on these 8×8 images. Numbers in the README.
DEMO_FAMILY = "digits_cnn"
DEMO_HYPERPARAMETERS = {"lr": "0.001", "augment_shift": "0", "ensemble": "5"}


@dataclass
class DemoConfig:
    quick: bool
    home: Path
    seed: int
    n_labels: int
    search_trials: int
    locust_s: float
    locust_users: int
    locust_rate: float
    clean_predictions: int
    shifted_labels: int
    canary_requests: int
    timeout_s: float
    family: str = DEMO_FAMILY

    @classmethod
    def make(cls, quick: bool, home: Path, seed: int = 0) -> DemoConfig:
        if quick:
            return cls(True, home, seed, 1500, 0, 8, 3, 10, 600, 800, 120, 120)
        return cls(False, home, seed, 1500, 4, 30, 10, 10, 1500, 1000, 400, 300)

    @property
    def hyperparameters(self) -> dict[str, str]:
        return {**DEMO_HYPERPARAMETERS, "seed": str(self.seed)}

    @property
    def split_salt(self) -> str:
        return f"demo-{self.seed}"
