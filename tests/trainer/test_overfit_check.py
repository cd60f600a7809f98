"""The overfit-one-batch check catches a broken setup before the real run, with a reason a person can act on."""

from __future__ import annotations

import pytest

from services.trainer.data.sklearn_digits import write_digits_snapshot
from services.trainer.errors import OverfitCheckFailed
from services.trainer.models import family
from services.trainer.models.families import family_defaults
from services.trainer.training.hyperparameters import parse_hyperparameters
from services.trainer.training.overfit import overfit_one_batch
from tests.support.projects import prepared


def test_a_healthy_setup_passes(digits_uri) -> None:
    fam = family("mlp")
    report = overfit_one_batch(fam, prepared(digits_uri), family_defaults(fam))
    assert report.final_loss < 0.05 and report.heldout_accuracy > 0.5


def test_shuffled_labels_are_caught(tmp_path) -> None:
    uri = write_digits_snapshot(tmp_path, "shuffled", shuffle_labels=True).as_uri()
    fam = family("mlp")
    with pytest.raises(OverfitCheckFailed, match="labels look unrelated to the features"):
        overfit_one_batch(fam, prepared(uri), family_defaults(fam))


def test_learning_rate_zero_is_caught(digits_uri) -> None:
    fam = family("mlp")
    hp = parse_hyperparameters({"lr": "0"}, family_defaults(fam))
    with pytest.raises(OverfitCheckFailed, match="the loss did not move: learning rate 0"):
        overfit_one_batch(fam, prepared(digits_uri), hp)
