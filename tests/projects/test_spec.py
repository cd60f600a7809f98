"""Project specs: every example validates; a bad spec gets one message per problem, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.projects import SpecInvalid, load_spec, load_spec_file, parse_spec_json, spec_json, spec_sha256

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/project.yaml")), ids=lambda p: p.parent.name)
def test_every_example_spec_is_valid_and_round_trips(path: Path) -> None:
    spec = load_spec_file(path)
    assert spec.name == path.parent.name.replace("_", "-") or spec.name
    again = parse_spec_json(spec_json(spec))
    assert again == spec and spec_sha256(again) == spec_sha256(spec)


def problems(text: str) -> list[str]:
    with pytest.raises(SpecInvalid) as exc:
        load_spec(text)
    return exc.value.problems


def test_each_problem_is_reported_once_with_its_field() -> None:
    got = problems(
        """
name: Fraud Table
task: {type: regression, labels: [cat]}
input: {kind: image, channels: 2, height: 0, width: 8}
model: {familly: x}
"""
    )
    assert got == [
        "name: 'Fraud Table' must start with a lower-case letter and hold at most 63 lower-case letters, digits, "
        "'-' or '_' (it names the served model)",
        "task.type: task type 'regression' is not supported yet: use classification",
        "task.labels: List should have at least 2 items after validation, not 1",
        "input.channels: Input should be 1 or 3",
        "input.height: Input should be greater than or equal to 1",
        "model.familly: unknown field (check its spelling and indentation)",
    ]


def test_columns_and_kinds_are_checked() -> None:
    got = problems(
        """
name: t
task: {labels: [a, b]}
input:
  kind: tabular
  columns:
    - {name: colour, type: category}
    - {name: colour, type: float, min: 3, max: 1}
"""
    )
    assert got == [
        "input.columns[0]: column 'colour': a category column lists its values",
        "input.columns[1]: column 'colour': min 3.0 is above max 1.0",
    ]
    assert problems("name: t\ntask: {labels: [a, b]}\ninput: {kind: audio}") == [
        "input: input.kind must be one of image, tabular, text"
    ]
    assert problems("name: [") == [
        "line 1, column 8: not valid YAML (expected the node content, but found '<stream end>')"
    ]
    assert problems("name: t\ntask: {labels: [yes, no]}\ninput: {kind: text}") == [
        "task.labels: True is a YAML boolean: quote it (e.g. 'yes') to use it as a name"
    ]
    assert load_spec("name: t\ntask: {labels: [0, 1]}\ninput: {kind: text}").labels == ("0", "1")
    assert problems("- a list") == ["spec: a project spec is a mapping (name, task, input, ...)"]


def test_user_code_is_read_into_the_spec(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("def build_model(spec, hparams):\n    raise NotImplementedError\n")
    (tmp_path / "project.yaml").write_text(
        "name: t\ntask: {labels: [a, b]}\ninput: {kind: text}\nmodel: {code: {path: model.py, entry: build_model}}\n"
    )
    spec = load_spec_file(tmp_path / "project.yaml")
    assert spec.family_name() == "custom" and "def build_model" in spec.model.code.source
    (tmp_path / "project.yaml").write_text(
        "name: t\ntask: {labels: [a, b]}\ninput: {kind: text}\nmodel: {code: {path: gone.py, entry: train}}\n"
    )
    with pytest.raises(SpecInvalid, match=r"model\.code\.path: no file"):
        load_spec_file(tmp_path / "project.yaml")
