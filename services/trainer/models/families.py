"""The built-in model families, the input kinds each takes, their defaults, and how one is built.

| family       | input kind | what it is                                                                  |
|--------------|------------|-----------------------------------------------------------------------------|
| mlp          | image      | a fully connected ReLU net on the pixels (tiny images)                      |
| small_cnn    | image      | two convolutions, one pooling, an FC head (tiny images: every position kept) |
| image_cnn    | image      | conv-BN-ReLU-pool blocks down to ~4×4, global pooling (any input size)      |
| tabular_mlp  | tabular    | category embeddings + standardised numbers + null flags → MLP               |
| text_mlp     | text       | hashed n-grams → TF-IDF → L2 norm → linear (depth 0) or MLP head             |
| custom       | any        | the project's own `build_model(spec, hparams)`                              |

Every model returns logits and holds its own input normalisation (fitted on the training split),
so the exported graph takes the project's model input as preprocessing produced it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from services.projects.spec import ImageInput, ProjectSpec, TabularInput
from services.trainer.errors import InvalidRequest
from services.trainer.models.cnn import ImageCNN, SmallCNN
from services.trainer.models.layers import Standardize
from services.trainer.models.mlp import MLP
from services.trainer.models.tabular import TabularEncoders, TabularMLP
from services.trainer.models.text import TextMLP

KINDS = ("image", "tabular", "text")


@dataclass(frozen=True)
class ModelFamily:
    name: str
    kinds: tuple[str, ...]  # the project input kinds it takes
    default_width: int
    default_depth: int
    default_augment: int = 0  # image families: random shifts of up to this many pixels
    default_max_epochs: int = 200
    description: str = ""

    @property
    def augments_images(self) -> bool:
        return self.kinds == ("image",)


FAMILIES: dict[str, ModelFamily] = {
    f.name: f
    for f in (
        ModelFamily("mlp", ("image",), 256, 2, default_augment=1, description="fully connected net on the pixels"),
        ModelFamily("small_cnn", ("image",), 128, 1, default_augment=1, description="small CNN for tiny images"),
        ModelFamily("image_cnn", ("image",), 128, 1, default_augment=1, default_max_epochs=60, description="image CNN"),
        ModelFamily("tabular_mlp", ("tabular",), 128, 2, description="category embeddings + MLP"),
        ModelFamily("text_mlp", ("text",), 128, 0, default_max_epochs=100, description="TF-IDF + linear/MLP head"),
        ModelFamily("custom", KINDS, 128, 2, description="the project's own build_model(spec, hparams)"),
    )
}

UserBuilder = Callable[[ProjectSpec, Any], nn.Module]


def family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise InvalidRequest(f"unknown model_family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def check_family(fam: ModelFamily, spec: ProjectSpec) -> None:
    if spec.kind not in fam.kinds:
        takes = [n for n, f in FAMILIES.items() if spec.kind in f.kinds]
        raise InvalidRequest(
            f"model family {fam.name!r} takes {'/'.join(fam.kinds)} input; project {spec.name!r} is {spec.kind} "
            f"(families for it: {', '.join(takes)})"
        )


def image_shape(spec: ProjectSpec) -> tuple[int, int, int] | None:
    return (spec.input.channels, spec.input.height, spec.input.width) if isinstance(spec.input, ImageInput) else None


def build_model(
    fam: ModelFamily,
    spec: ProjectSpec,
    x_train: np.ndarray,
    hp: Any,
    user_builder: UserBuilder | None = None,
) -> nn.Module:
    """A freshly initialised model of `fam` for `spec`; its normalisation is fitted on `x_train`."""
    check_family(fam, spec)
    n_classes = len(spec.labels)
    flat = np.asarray(x_train, dtype=np.float32).reshape(len(x_train), -1)
    if fam.name == "custom":
        if user_builder is None:
            raise InvalidRequest(f"project {spec.name!r} has no build_model code")
        model = user_builder(spec, hp)
        if not isinstance(model, nn.Module):
            raise InvalidRequest(f"build_model returned {type(model).__name__}, not a torch.nn.Module")
        return model
    if fam.name == "tabular_mlp":
        assert isinstance(spec.input, TabularInput)
        return TabularMLP(TabularEncoders(spec.input, flat), n_classes, width=hp.width, depth=hp.depth)
    if fam.name == "text_mlp":
        return TextMLP(flat, n_classes, width=hp.width, depth=hp.depth)
    shape = image_shape(spec)
    assert shape is not None
    if fam.name == "image_cnn":
        pixels = torch.from_numpy(flat.reshape(len(flat), shape[0], -1))
        mean = pixels.mean(dim=(0, 2)) if len(flat) else torch.zeros(shape[0])
        std = pixels.std(dim=(0, 2)) if len(flat) > 1 else torch.ones(shape[0])
        return ImageCNN(mean, std, shape, n_classes, width=hp.width, depth=hp.depth, channels=hp.channels)
    norm = Standardize.fit(flat)
    if fam.name == "small_cnn":
        return SmallCNN(norm, shape, n_classes, width=hp.width, depth=hp.depth, channels=hp.channels)
    return MLP(norm, flat.shape[1], n_classes, width=hp.width, depth=hp.depth)


def fitted_encoders(model: nn.Module) -> dict[str, Any]:
    """What a model fitted on the training split to encode its inputs (for flywheel.json)."""
    for m in model.modules():
        if isinstance(m, TabularEncoders):
            return m.fitted
    return {}


def family_defaults(fam: ModelFamily):  # type: ignore[no-untyped-def]
    """The family's starting hyperparameters (the notes' defaults plus its width, depth, augmentation)."""
    from services.trainer.training.hyperparameters import Hyperparameters

    return Hyperparameters(
        width=fam.default_width,
        depth=fam.default_depth,
        augment_shift=fam.default_augment,
        max_epochs=fam.default_max_epochs,
    )
