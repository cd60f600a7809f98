"""Project specs from YAML or JSON text, with one clear message per problem, and their canonical JSON.

`load_spec` reads a spec file as a user wrote it (YAML; user code referenced by a path relative to
the file is read into the spec); `parse_spec_json` reads the canonical JSON the registry stores
and the events carry. Either raises `SpecInvalid` listing every problem as `field.path: reason`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.projects.spec import MAX_CODE_BYTES, ProjectSpec

MAX_SPEC_BYTES = 2 * 1024 * 1024


class SpecInvalid(ValueError):
    """A spec that cannot be used; `problems` holds one `field: reason` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid project spec:\n  " + "\n  ".join(problems))


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int) and parts:
            parts[-1] = f"{parts[-1]}[{p}]"
        elif isinstance(p, str) and p in ("tabular", "image", "text") and parts and parts[-1] == "input":
            continue  # the discriminated union's tag: `input.height`, not `input.image.height`
        else:
            parts.append(str(p))
    return ".".join(parts) or "spec"


def problems_of(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (check its spelling and indentation)"
        elif err.get("type") == "union_tag_invalid":
            msg = "input.kind must be one of image, tabular, text"
        out.append(f"{_location(tuple(err.get('loc', ())))}: {msg}")
    return out


def validate_document(doc: object) -> ProjectSpec:
    if not isinstance(doc, dict):
        raise SpecInvalid(["spec: a project spec is a mapping (name, task, input, ...)"])
    try:
        return ProjectSpec.model_validate(doc)
    except ValidationError as exc:
        raise SpecInvalid(problems_of(exc)) from None


def load_spec(text: str | bytes, base_dir: Path | None = None) -> ProjectSpec:
    """A spec from YAML (JSON is YAML too). `model.code.path` is read relative to `base_dir`."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecInvalid([f"spec: {len(text)} bytes; the limit is {MAX_SPEC_BYTES}"])
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "spec"
        raise SpecInvalid([f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})"]) from None
    spec = validate_document(doc)
    code = spec.model.code
    if code is not None and not code.source:
        if base_dir is None:
            raise SpecInvalid(["model.code.path: cannot be read without the spec file's folder"])
        path = (base_dir / code.path).resolve()
        if not path.is_file():
            raise SpecInvalid([f"model.code.path: no file {path}"])
        data = path.read_bytes()
        if len(data) > MAX_CODE_BYTES:
            raise SpecInvalid([f"model.code.path: {len(data)} bytes; the limit is {MAX_CODE_BYTES}"])
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecInvalid([f"model.code.path: {path} is not UTF-8 text"]) from None
        spec = spec.model_copy(
            update={"model": spec.model.model_copy(update={"code": code.model_copy(update={"source": source})})}
        )
    return spec


def load_spec_file(path: Path) -> ProjectSpec:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise SpecInvalid([f"spec: cannot read {path}: {exc.strerror or exc}"]) from None
    return load_spec(text, path.parent)


def spec_json(spec: ProjectSpec) -> str:
    """The canonical JSON of a spec: equal specs give equal bytes (and so one version)."""
    doc = spec.model_dump(mode="json")
    if doc.get("kubernetes") is None:
        del doc["kubernetes"]  # a spec without the block keeps the bytes (and so the version) it had before it existed
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def spec_sha256(spec: ProjectSpec) -> str:
    return hashlib.sha256(spec_json(spec).encode()).hexdigest()


def parse_spec_json(text: str | bytes) -> ProjectSpec:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecInvalid([f"spec: not valid JSON ({exc})"]) from None
    return validate_document(doc)
