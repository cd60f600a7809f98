"""The project spec: what a user writes once per model (YAML), validated field by field.

A project says what the model is for and what it takes, so no service has to assume a dataset:

* `task`: classification (regression and multi-label are named so specs can say what they want;
  they are refused with a clear message until the trainer supports them) and its labels;
* `input`: its kind and schema — `image` (channels, height, width, resize/crop, normalisation,
  accepted formats and limits), `tabular` (named, typed columns), `text` (short documents);
* `model`: a built-in family with hyperparameters, or the user's own code (`build_model` or `train`);
* `slo`, `drift`, `label_studio`: serving target, drift-test settings, how Label Studio tasks map.

Everything here is plain data (pydantic models, no I/O): ingest, lake, trainer, gateway and monitor
read the same objects, and services/preprocessing turns `input` into tensors the same way everywhere.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = r"^[a-z][a-z0-9_-]{0,62}$"
COLUMN_RE = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
ENTRY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_LABELS = 1000
MAX_COLUMNS = 512
MAX_CATEGORIES = 10_000
MAX_CODE_BYTES = 1024 * 1024
IMAGE_FORMATS = ("png", "jpeg", "webp")
# Above this many values per example, the model input is not carried in events and Parquet: the
# trainer re-reads the stored original (an image, a text) and runs the same preprocessing on it.
MATERIALISE_MAX = 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _yaml_strings(values: Any) -> Any:
    """Numbers a YAML list holds (`labels: [0, 1]`) as the strings the user meant; YAML's booleans
    (`yes`, `no`, `on`, `off`) refused with a hint, since str(True) is not what was written."""
    if not isinstance(values, list):
        return values
    out = []
    for v in values:
        if isinstance(v, bool):
            raise ValueError(f"{v} is a YAML boolean: quote it (e.g. 'yes') to use it as a name")
        out.append(str(v) if isinstance(v, int | float) else v)
    return out


def _printable_label(value: str) -> str:
    if not value or len(value) > 128 or not value.isprintable() or value != value.strip():
        raise ValueError(f"label {value!r} must be 1-128 printable characters without surrounding spaces")
    return value


class Task(Strict):
    """What the model predicts. Only classification trains today; the other types are reserved."""

    type: Literal["classification", "regression", "multilabel"] = "classification"
    labels: list[str] = Field(min_length=2, max_length=MAX_LABELS, description="the classes, in output order")

    @field_validator("type")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value != "classification":
            raise ValueError(f"task type {value!r} is not supported yet: use classification")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _label_strings(cls, values: Any) -> Any:
        return _yaml_strings(values)

    @field_validator("labels")
    @classmethod
    def _labels(cls, values: list[str]) -> list[str]:
        for v in values:
            _printable_label(v)
        if len(set(values)) != len(values):
            raise ValueError("labels must be unique")
        return values


# -- inputs -----------------------------------------------------------------------------------
class Column(Strict):
    """One column of a tabular input. `category` columns list their values; numbers may have bounds."""

    name: str
    type: Literal["float", "int", "category"]
    values: list[str] | None = Field(None, description="category: the allowed values, in a fixed order")
    nullable: bool = False
    min: float | None = None
    max: float | None = None

    @field_validator("values", mode="before")
    @classmethod
    def _value_strings(cls, values: Any) -> Any:
        return _yaml_strings(values)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(COLUMN_RE, value):
            raise ValueError(
                f"column name {value[:80]!r}: use 1-64 letters, digits, '_', '.' or '-', not starting with a digit"
            )
        return value

    @model_validator(mode="after")
    def _by_type(self) -> Column:
        if self.type == "category":
            if not self.values:
                raise ValueError(f"column {self.name!r}: a category column lists its values")
            if len(self.values) > MAX_CATEGORIES:
                raise ValueError(f"column {self.name!r}: at most {MAX_CATEGORIES} values")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"column {self.name!r}: values must be unique")
            if any(not v or len(v) > 256 for v in self.values):
                raise ValueError(f"column {self.name!r}: values are 1-256 characters")
            if self.min is not None or self.max is not None:
                raise ValueError(f"column {self.name!r}: min/max apply to numbers, not categories")
        elif self.values is not None:
            raise ValueError(f"column {self.name!r}: only category columns have values")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is above max {self.max}")
        return self


class TabularInput(Strict):
    kind: Literal["tabular"]
    columns: list[Column] = Field(min_length=1, max_length=MAX_COLUMNS)

    @field_validator("columns")
    @classmethod
    def _unique(cls, columns: list[Column]) -> list[Column]:
        names = [c.name for c in columns]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"column names must be unique; repeated: {', '.join(dup)}")
        return columns

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.columns),)


class ImageInput(Strict):
    """The model's image input, and how any accepted image becomes it.

    Decoding accepts `formats` up to `max_bytes` and `max_pixels`; the image is converted to
    grey (channels 1) or RGB (channels 3), then `resize`: `stretch` to height×width, `crop`
    (scale the shorter side, centre crop) or `pad` (fit inside, pad with black); then scaled to
    [0, 1] and normalised per channel with `mean`/`std` when given. `layout: flat` hands the model
    C·H·W values in one row (the small MLP/CNN for tiny images), `chw` an image tensor.
    """

    kind: Literal["image"]
    channels: Literal[1, 3]
    height: int = Field(ge=1, le=2048)
    width: int = Field(ge=1, le=2048)
    resize: Literal["stretch", "crop", "pad"] = "stretch"
    resample: Literal["nearest", "box", "bilinear", "bicubic", "lanczos"] = "bilinear"
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: Literal["chw", "flat"] = "chw"
    formats: list[Literal["png", "jpeg", "webp"]] = Field(default_factory=lambda: list(IMAGE_FORMATS), min_length=1)
    max_bytes: int = Field(10 * 1024 * 1024, ge=64, le=64 * 1024 * 1024)
    max_pixels: int = Field(40_000_000, ge=1, le=200_000_000)

    @model_validator(mode="after")
    def _normalisation(self) -> ImageInput:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{name} has {len(values)} values; the image has {self.channels} channel(s)")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        if self.height * self.width > self.max_pixels:
            raise ValueError("the model input is larger than max_pixels")
        return self

    @property
    def size(self) -> int:
        return self.channels * self.height * self.width

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,) if self.layout == "flat" else (self.channels, self.height, self.width)

    @property
    def plain_scale(self) -> bool:
        """Pixels / 255 with no normalisation: a model input that is also a valid image."""
        return self.mean is None or (all(m == 0 for m in self.mean) and all(s == 1 for s in self.std or []))


class TextInput(Strict):
    """Short documents. The built-in model input is a hashed bag of n-grams (`hash_dim` counts)."""

    kind: Literal["text"]
    max_chars: int = Field(5000, ge=1, le=100_000)
    lowercase: bool = True
    analyzer: Literal["word", "char"] = "word"
    ngram_min: int = Field(1, ge=1, le=5)
    ngram_max: int = Field(2, ge=1, le=5)
    hash_dim: int = Field(4096, ge=16, le=262_144)

    @model_validator(mode="after")
    def _ngrams(self) -> TextInput:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min {self.ngram_min} is above ngram_max {self.ngram_max}")
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.hash_dim,)


InputSpec = Annotated[TabularInput | ImageInput | TextInput, Field(discriminator="kind")]


def materialised(spec: TabularInput | ImageInput | TextInput) -> bool:
    """Whether an example's model input travels with it (events, Parquet) or is rebuilt from the original."""
    if isinstance(spec, TabularInput):
        return True
    if isinstance(spec, ImageInput):
        return spec.size <= MATERIALISE_MAX
    return False


# -- the model ----------------------------------------------------------------------------------
class Search(Strict):
    trials: int = Field(0, ge=0, le=1000)
    rounds: int = Field(2, ge=1, le=10)


class UserCode(Strict):
    """The user's own training code, shipped inside the spec (`source`) so any trainer can run it.

    `entry: build_model` — `build_model(spec, hparams) -> torch.nn.Module` returning logits;
    Flywheel runs its loop, checks, baselines, export and gate around it.
    `entry: train` — `train(context)` writes `model.onnx` or `model.pt` (and may return metrics);
    Flywheel evaluates that artifact itself and the same gate judges it.
    """

    path: str = Field(min_length=1, max_length=512, description="the Python file, relative to the spec file")
    entry: Literal["build_model", "train"]
    source: str = Field("", max_length=MAX_CODE_BYTES, description="filled from `path` when the spec is loaded")


class ModelSpec(Strict):
    family: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,63}$", description="a built-in family")
    code: UserCode | None = None
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    search: Search = Field(default_factory=Search)
    budget_s: float = Field(0.0, ge=0)

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one(self) -> ModelSpec:
        if self.family and self.code:
            raise ValueError("give a built-in family or your own code, not both")
        return self


class SLO(Strict):
    p99_ms: float = Field(100.0, gt=0, le=600_000)
    min_accuracy: float | None = Field(None, ge=0, le=1)


class DriftSettings(Strict):
    """Per-project overrides of the monitor's drift test (services/monitor/detector.py)."""

    alpha: float | None = Field(None, gt=0, lt=1)
    min_effect: float | None = Field(None, ge=0)
    min_samples: int | None = Field(None, ge=10)
    features: Literal["all", "raw", "derived"] | None = None


class LabelStudio(Strict):
    """How a Label Studio project's tasks map onto this project.

    `control`: the `from_name` of the Choices/Labels control holding the class (default: the one
    control in the payload's `parsed_label_config` whose labels are ours). `data_key`: the key of
    `task.data` holding the input (default: the control's `to_name` input). `row_keys`: tabular
    projects read their columns from `task.data` (default: every column by name).
    """

    control: str | None = Field(None, min_length=1, max_length=128)
    data_key: str | None = Field(None, min_length=1, max_length=128)


# -- where the Kubernetes runner runs it ------------------------------------------------------------
# A quantity as the API server reads it (resource.Quantity): a number, then a binary, decimal or exponent suffix.
QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
QUANTITY_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9), ("T", 12))},
    **{"P": Decimal(10) ** 15, "E": Decimal(10) ** 18},
}
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
IMAGE_RE = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$"
MAX_ARGV = 64
MAX_ARG_CHARS = 4096
MAX_ENV = 64
MAX_JOB_SECONDS = 7 * 24 * 3600


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity ('500m', '4Gi', '2') as a number, as kubernetes.utils.parse_quantity reads it
    (not imported: only the trainer's image has the kubernetes package, and every service reads specs);
    ValueError when the API server would refuse it, or it is not above zero."""
    found = QUANTITY_RE.fullmatch(value) if len(value) <= 64 else None
    if found is None:
        raise ValueError(f"{value[:80]!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    suffix = found["suffix"] or ""
    if suffix not in QUANTITY_SUFFIXES and suffix:  # an exponent, 1e3
        number = Decimal(found["number"] + suffix)
    else:
        number = Decimal(found["number"]) * QUANTITY_SUFFIXES.get(suffix, Decimal(1))
    if number <= 0:
        raise ValueError(f"{value!r} must be above zero")
    return number


class ResourceList(Strict):
    """CPU and memory, as Kubernetes quantities (YAML numbers are read as the quantity they spell)."""

    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value} is a YAML boolean, not a quantity")
        value = str(value) if isinstance(value, int | float) else value
        if isinstance(value, str):
            parse_quantity(value)
        return value


class Resources(Strict):
    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        for name in ("cpu", "memory"):
            req, lim = getattr(self.requests, name), getattr(self.limits, name)
            if req is not None and lim is not None and parse_quantity(req) > parse_quantity(lim):
                raise ValueError(f"requests.{name} {req} is above limits.{name} {lim}")
        return self


class KubernetesSpec(Strict):
    """How the Kubernetes runner runs this project's training Jobs (the local runner ignores it).

    `image` defaults to the trainer's image (the trainer allows only the prefixes it is configured
    with); `command`/`args` replace the image's entrypoint, else the pod runs Flywheel's worker.
    `gpus` become `nvidia.com/gpu` (request = limit); `env` adds variables (FLYWHEEL_* are the
    platform's). The two Job fields keep their Kubernetes names. A training request may carry the
    same block: the fields it gives replace the project's.
    """

    image: str | None = Field(None, pattern=IMAGE_RE, description="the training image (default: the trainer's)")
    command: list[Annotated[str, Field(min_length=1, max_length=MAX_ARG_CHARS)]] | None = Field(
        None, min_length=1, max_length=MAX_ARGV
    )
    args: list[Annotated[str, Field(max_length=MAX_ARG_CHARS)]] | None = Field(None, max_length=MAX_ARGV)
    resources: Resources | None = None
    gpus: int | None = Field(None, ge=0, le=64, description="nvidia.com/gpu; the trainer may allow fewer")
    env: dict[str, str] = Field(default_factory=dict, max_length=MAX_ENV)
    ttlSecondsAfterFinished: int | None = Field(None, ge=0, le=MAX_JOB_SECONDS)
    activeDeadlineSeconds: int | None = Field(None, ge=1, le=MAX_JOB_SECONDS)

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for k, v in value.items():
            if isinstance(v, bool):
                raise ValueError(f"{k}: {v} is a YAML boolean: quote it (e.g. 'true')")
            out[k] = str(v) if isinstance(v, int | float) else v
        return out

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, v in value.items():
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"{name[:80]!r} is not a variable name (1-128 letters, digits and '_', not starting with a digit)"
                )
            if name.upper().startswith("FLYWHEEL_"):
                raise ValueError(f"{name}: FLYWHEEL_* variables are set by the platform")
            if len(v) > MAX_ARG_CHARS:
                raise ValueError(f"{name}: the value is over {MAX_ARG_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _args_need_command(self) -> KubernetesSpec:
        if self.args is not None and self.command is None:
            raise ValueError("args need a command (Flywheel's worker takes no extra arguments)")
        return self


class ProjectSpec(Strict):
    name: str = Field(description="lower-case letters, digits, '-' and '_'; names the served model")
    description: str = Field("", max_length=2000)
    task: Task
    input: InputSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    slo: SLO = Field(default_factory=SLO)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    label_studio: LabelStudio = Field(default_factory=LabelStudio)
    kubernetes: KubernetesSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(NAME_RE, value):
            raise ValueError(
                f"{value[:80]!r} must start with a lower-case letter and hold at most 63 lower-case letters, "
                "digits, '-' or '_' (it names the served model)"
            )
        return value

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.task.labels)

    @property
    def kind(self) -> str:
        return self.input.kind

    def family_name(self) -> str:
        """The family that trains this project: its own, `custom` for user code, else the kind's default."""
        if self.model.code is not None:
            return "custom"
        if self.model.family:
            return self.model.family
        return default_family(self.input)


def default_family(spec: TabularInput | ImageInput | TextInput) -> str:
    if isinstance(spec, TabularInput):
        return "tabular_mlp"
    if isinstance(spec, TextInput):
        return "text_mlp"
    return "small_cnn" if spec.height * spec.width <= 32 * 32 else "image_cnn"
