"""A project folder's data for `flywheel demo --project`: its examples, how each is sent, and a shift.

A project folder holds `project.yaml` and `data/labels.csv` (or a `make_data.py` that writes it:
`python make_data.py OUT_DIR`). `labels.csv` has a `label` column, an optional `example_id`, and
the input as the project's kind asks:

* tabular: one column per spec column (empty = null);
* image: `image`, a file path relative to the data folder (PNG, JPEG or WebP, any size);
* text: `text`.

The demo labels part of the examples and sends the rest as live traffic, then shifts that traffic
the way a changed world would, per kind: numbers move by a standard deviation and categories
change frequencies and nulls become common (tabular); images turn, darken and get noisy (image);
texts arrive from a new channel, shouted and signed (text).
"""

from __future__ import annotations

import base64
import csv
import io
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.projects import ProjectSpec, SpecInvalid, load_spec_file
from services.projects.spec import TabularInput

MAX_EXAMPLES = 20_000


class ProjectDataError(ValueError):
    """The project folder cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Example:
    example_id: str
    label: str
    input: Any  # tabular: {column: value}; image: the encoded bytes; text: the string
    name: str = ""  # image: the file name


@dataclass
class ProjectData:
    folder: Path
    spec: ProjectSpec
    examples: list[Example]

    @classmethod
    def load(cls, folder: Path, make_into: Path | None = None) -> ProjectData:
        """Read a project folder (running its make_data.py into `make_into` when it has no data yet)."""
        folder = Path(folder).resolve()
        try:
            spec = load_spec_file(folder / "project.yaml")
        except SpecInvalid as exc:
            raise ProjectDataError(f"{folder / 'project.yaml'}: {exc}") from None
        data = folder / "data"
        if not (data / "labels.csv").is_file():
            maker = folder / "make_data.py"
            if not maker.is_file():
                raise ProjectDataError(f"{folder} has no data/labels.csv and no make_data.py to write it")
            data = make_into or data
            done = subprocess.run(
                [sys.executable, str(maker), str(data)], capture_output=True, text=True, timeout=600, check=False
            )
            if done.returncode != 0 or not (data / "labels.csv").is_file():
                raise ProjectDataError(f"{maker} failed: {done.stderr.strip()[-500:]}")
        return cls(folder, spec, _read(data, spec))

    def split(self, n_labels: int, seed: int) -> tuple[list[Example], list[Example]]:
        """(labelled, traffic): a seeded draw; traffic is never labelled, so it is unseen by training."""
        order = np.random.default_rng(seed).permutation(len(self.examples))
        n_labels = min(n_labels, len(self.examples) - max(50, len(self.examples) // 5))
        if n_labels < 20:
            raise ProjectDataError(f"{len(self.examples)} examples are too few for a demo (labels and traffic)")
        picked = [self.examples[i] for i in order]
        return picked[:n_labels], picked[n_labels:]

    # -- what each example looks like on the wire --------------------------------------------------
    def label_item(self, ex: Example, annotator: str = "demo-team") -> dict[str, Any]:
        """One item of `POST /v1/labels`."""
        item: dict[str, Any] = {"example_id": ex.example_id, "label": ex.label, "annotator": annotator}
        return {**item, **self.input_field(ex)}

    def input_field(self, ex: Example) -> dict[str, Any]:
        kind = self.spec.kind
        if kind == "tabular":
            return {"row": ex.input}
        if kind == "text":
            return {"text": ex.input}
        return {"image": base64.b64encode(ex.input).decode()}

    def instance(self, ex: Example) -> Any:
        """One `:predict` instance."""
        kind = self.spec.kind
        if kind == "tabular":
            return ex.input
        if kind == "text":
            return ex.input
        return {"b64": base64.b64encode(ex.input).decode()}

    def task_data(self, ex: Example, reference: str = "") -> dict[str, Any]:
        """A Label Studio task's `data`: columns (tabular), the text, or the image's URL `reference`."""
        kind = self.spec.kind
        data: dict[str, Any] = {"example_id": ex.example_id}
        if kind == "tabular":
            return {**data, **ex.input}
        key = self.spec.label_studio.data_key or ("text" if kind == "text" else "image")
        if kind == "text":
            return {**data, key: ex.input}
        return {**data, key: reference}

    # -- a changed world -------------------------------------------------------------------------
    def shifted(self, examples: list[Example], seed: int) -> list[Example]:
        rng = np.random.default_rng(seed)
        kind = self.spec.kind
        if kind == "tabular":
            return _shift_rows(self.spec.input, examples, rng)  # type: ignore[arg-type]
        if kind == "text":
            return [replace(e, input=_shift_text(e.input, rng)) for e in examples]
        return [replace(e, input=_shift_image(e.input, rng)) for e in examples]


def shift_description(kind: str) -> str:
    return {
        "tabular": "every number up by one standard deviation, categories re-mixed, a third of nullable values missing",
        "image": "a new camera: turned 25°, 40% darker, noisy",
        "text": "a new channel: shouted in capitals and signed with a ticket number",
    }[kind]


# -- reading ----------------------------------------------------------------------------------
def _read(data: Path, spec: ProjectSpec) -> list[Example]:
    path = data / "labels.csv"
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or [])
        if "label" not in fields:
            raise ProjectDataError(f"{path} has no `label` column")
        examples = []
        for i, row in enumerate(reader):
            if i >= MAX_EXAMPLES:
                break
            example_id = row.get("example_id") or f"{spec.name}-{i:06d}"
            examples.append(Example(example_id, row["label"], *_input(spec, row, data, path, i)))
    if not examples:
        raise ProjectDataError(f"{path} holds no examples")
    unknown = sorted({e.label for e in examples} - set(spec.labels))
    if unknown:
        raise ProjectDataError(f"{path}: labels {unknown[:5]} are not in project.yaml's task.labels")
    return examples


def _input(spec: ProjectSpec, row: dict[str, str], data: Path, path: Path, i: int) -> tuple[Any, str]:
    kind = spec.kind
    if kind == "tabular":
        assert isinstance(spec.input, TabularInput)
        out: dict[str, Any] = {}
        for c in spec.input.columns:
            if c.name not in row:
                raise ProjectDataError(f"{path} has no column {c.name!r} (project.yaml declares it)")
            raw = row[c.name].strip()
            if raw == "":
                out[c.name] = None
            elif c.type == "category":
                out[c.name] = raw
            else:
                try:
                    number = float(raw)
                except ValueError:
                    raise ProjectDataError(f"{path} row {i + 2}: {c.name}={raw!r} is not a number") from None
                out[c.name] = int(number) if c.type == "int" and number.is_integer() else number
        return out, ""
    if kind == "text":
        if "text" not in row:
            raise ProjectDataError(f"{path} has no `text` column")
        return row["text"], ""
    if "image" not in row:
        raise ProjectDataError(f"{path} has no `image` column (file paths relative to {data})")
    file = (data / row["image"]).resolve()
    if not file.is_file() or not file.is_relative_to(data.resolve()):
        raise ProjectDataError(f"{path} row {i + 2}: no image file {row['image']!r} under {data}")
    return file.read_bytes(), file.name


# -- shifts -----------------------------------------------------------------------------------
def _shift_rows(spec: TabularInput, examples: list[Example], rng: np.random.Generator) -> list[Example]:
    stats: dict[str, float] = {}
    for c in spec.columns:
        if c.type != "category":
            values = [e.input[c.name] for e in examples if e.input.get(c.name) is not None]
            stats[c.name] = float(np.std(values)) if values else 0.0
    out = []
    for e in examples:
        row = dict(e.input)
        for c in spec.columns:
            value = row.get(c.name)
            if c.nullable and rng.random() < 0.33:
                row[c.name] = None
                continue
            if value is None:
                continue
            if c.type == "category":
                values = c.values or []
                if rng.random() < 0.5:
                    row[c.name] = values[int(rng.integers(0, len(values)))]
                continue
            moved = value + max(stats[c.name], 1.0 if c.type == "int" else 1e-3)
            lo = c.min if c.min is not None else -np.inf
            hi = c.max if c.max is not None else np.inf
            moved = float(np.clip(moved, lo, hi))
            row[c.name] = round(moved) if c.type == "int" else moved
        out.append(replace(e, input=row))
    return out


def _shift_image(data: bytes, rng: np.random.Generator) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        fmt, mode = img.format or "PNG", img.mode
        rgb = img.convert("RGB")
    turned = rgb.rotate(25, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    arr = np.asarray(turned, dtype=np.float32) * 0.6 + rng.normal(0.0, 18.0, (turned.height, turned.width, 3))
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if mode == "L":
        out = out.convert("L")
    buf = io.BytesIO()
    out.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _shift_text(text: str, rng: np.random.Generator) -> str:
    ticket = int(rng.integers(10_000, 99_999))
    return f"{text.upper()} -- SENT VIA SMS GATEWAY 2.0, TICKET #{ticket}"
