"""The model families a job can ask for, with their defaults and what they accept."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from services.trainer.errors import InvalidRequest
from services.trainer.models.cnn import DigitsCNN
from services.trainer.models.layers import Standardize
from services.trainer.models.mlp import MLP


@dataclass(frozen=True)
class ModelFamily:
    name: str
    preprocess: str  # flywheel.json "preprocess": how the gateway builds the input tensor
    feature_dim: int | None  # None: any
    default_width: int
    default_depth: int
    image_side: int = 0  # > 0: features are a square image, shifts are a valid augmentation
    default_augment: int = 0
    default_max_epochs: int = 200


FAMILIES: dict[str, ModelFamily] = {
    "digits_mlp": ModelFamily("digits_mlp", "digits_8x8", 64, 256, 2, image_side=8, default_augment=1),
    "digits_cnn": ModelFamily("digits_cnn", "digits_8x8", 64, 128, 1, image_side=8, default_augment=1),
    "tabular_mlp": ModelFamily("tabular_mlp", "none", None, 128, 2),
}


def family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise InvalidRequest(f"unknown model_family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def build_model(fam: ModelFamily, x_train: np.ndarray, n_classes: int, width: int, depth: int) -> nn.Module:
    """A freshly initialised model whose normalisation is fitted on the training features."""
    dim = x_train.shape[1]
    if fam.feature_dim is not None and dim != fam.feature_dim:
        raise InvalidRequest(f"{fam.name} takes {fam.feature_dim} features, the snapshot has {dim}")
    norm = Standardize.fit(x_train)
    if fam.name == "digits_cnn":
        return DigitsCNN(norm, n_classes, width=width, depth=depth)
    return MLP(norm, dim, n_classes, width=width, depth=depth)


def family_defaults(fam: ModelFamily):  # type: ignore[no-untyped-def]
    """The family's starting hyperparameters (the notes' defaults plus its width, depth, augmentation)."""
    from services.trainer.training.hyperparameters import Hyperparameters

    return Hyperparameters(width=fam.default_width, depth=fam.default_depth, augment_shift=fam.default_augment)
