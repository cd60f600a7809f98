"""Typed hyperparameters with the notes' sensible defaults (Adam, lr 3e-4, ReLU, He init, no regularisation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from services.trainer.errors import InvalidRequest


@dataclass(frozen=True)
class Hyperparameters:
    lr: float = 3e-4
    width: int = 128
    depth: int = 2
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 15  # early stopping: epochs without a better validation loss
    seed: int = 0
    augment_shift: int = 0  # image families: random shifts of up to this many pixels (0: none)
    ensemble: int = 1  # members trained from different seeds, served as one model (their mean probabilities)

    def as_strings(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    def validate(self) -> Hyperparameters:
        checks = [
            (self.lr >= 0, "lr must be >= 0"),
            (self.width >= 1, "width must be >= 1"),
            (self.depth >= 0, "depth must be >= 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.max_epochs >= 1, "max_epochs must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
            (0 <= self.augment_shift <= 3, "augment_shift must be 0..3"),
            (1 <= self.ensemble <= 10, "ensemble must be 1..10"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise InvalidRequest("invalid hyperparameters: " + "; ".join(bad))
        return self


def parse_hyperparameters(values: dict[str, str], base: Hyperparameters | None = None) -> Hyperparameters:
    """Strings (from gRPC maps, Kafka, the CLI) → Hyperparameters; an unknown key is an error, not a default."""
    base = base or Hyperparameters()
    types = {f.name: f.type for f in fields(Hyperparameters)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise InvalidRequest(f"unknown hyperparameter(s) {unknown}; known: {sorted(types)}")
    changes: dict[str, object] = {}
    for key, raw in values.items():
        cast = float if types[key] in (float, "float") else int
        try:
            changes[key] = cast(float(raw)) if cast is int and float(raw).is_integer() else cast(raw)
        except ValueError:
            raise InvalidRequest(f"hyperparameter {key}={raw!r} is not a {cast.__name__}") from None
    return replace(base, **changes).validate()  # type: ignore[arg-type]
