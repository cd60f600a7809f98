"""Plain nn.Modules: they return logits; normalisation lives inside, softmax is added at export."""

from services.trainer.models.families import FAMILIES, ModelFamily, build_model, family
from services.trainer.models.layers import Standardize, WithSoftmax

__all__ = ["FAMILIES", "ModelFamily", "Standardize", "WithSoftmax", "build_model", "family"]
