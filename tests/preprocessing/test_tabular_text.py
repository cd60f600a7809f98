"""Tabular rows are checked field by field (the error names the column); texts are bounded; the
codes, vectors and signatures are deterministic across processes."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from services.preprocessing import InputCodec, InvalidField
from services.projects.spec import TabularInput, TextInput

TABLE = TabularInput.model_validate(
    {
        "kind": "tabular",
        "columns": [
            {"name": "age", "type": "int", "min": 0, "max": 130},
            {"name": "income", "type": "float", "nullable": True},
            {"name": "colour", "type": "category", "values": ["red", "green", "blue"]},
        ],
    }
)


def test_a_valid_row_becomes_codes_and_a_canonical_original() -> None:
    codec = InputCodec(TABLE)
    e = codec.encode_row({"colour": "blue", "age": 41.0, "income": None})
    assert e.model_input.dtype == np.float32 and e.model_input[0] == 41 and math.isnan(e.model_input[1])
    assert e.model_input[2] == 2 and np.array_equal(e.features, e.model_input, equal_nan=True)
    assert json.loads(e.stored) == {"age": 41, "income": None, "colour": "blue"}
    assert list(json.loads(e.stored)) == ["age", "income", "colour"]  # spec order, whatever was sent
    assert codec.tabular.row_of(e.model_input) == {"age": 41, "income": None, "colour": "blue"}
    assert np.array_equal(codec.encode_stored(e.stored), e.model_input, equal_nan=True)
    schema = codec.schema()
    assert schema.names == ("age", "income", "colour") and schema.categorical == (False, False, True)
    assert schema.nullable == (False, True, False)


@pytest.mark.parametrize(
    "row,field,reason",
    [
        ({"age": 3, "income": 1.0}, "colour", "is missing"),
        ({"age": None, "income": 1.0, "colour": "red"}, "age", "may not be null"),
        ({"age": "3", "income": 1.0, "colour": "red"}, "age", "must be a number, got a string"),
        ({"age": 3.5, "income": 1.0, "colour": "red"}, "age", "whole number"),
        ({"age": 131, "income": 1.0, "colour": "red"}, "age", "above the maximum 130"),
        ({"age": True, "income": 1.0, "colour": "red"}, "age", "got a boolean"),
        ({"age": 3, "income": float("nan"), "colour": "red"}, "income", "finite"),
        ({"age": 3, "income": 1.0, "colour": "purple"}, "colour", "not one of its values"),
        ({"age": 3, "income": 1.0, "colour": 2}, "colour", "got int"),
        ({"age": 3, "income": 1.0, "colour": "red", "shoe": 1}, "shoe", "is not a column"),
    ],
)
def test_each_bad_field_is_named_with_the_reason(row: dict, field: str, reason: str) -> None:
    with pytest.raises(InvalidField) as exc:
        InputCodec(TABLE).encode_row(row)
    assert exc.value.field == field and reason in exc.value.reason
    assert exc.value.at("labels[2].row") == f"labels[2].row.{field}"


def test_a_row_must_be_an_object() -> None:
    with pytest.raises(InvalidField, match="a row is a JSON object"):
        InputCodec(TABLE).encode_row([1, 2, 3])
    with pytest.raises(InvalidField, match="takes tabular input, not an image"):
        InputCodec(TABLE).encode_image(b"\x89PNG")


TEXT = TextInput(kind="text", max_chars=50, ngram_min=1, ngram_max=2, hash_dim=64)


def test_texts_are_bounded_and_clean() -> None:
    codec = InputCodec(TEXT)
    for bad, reason in [("", "is empty"), ("   ", "is empty"), ("x" * 51, "the limit is 50"), ("a\x00b", r"U\+0000")]:
        with pytest.raises(InvalidField, match=reason):
            codec.encode_text(bad)
    with pytest.raises(InvalidField, match="must be a string"):
        codec.encode_text(12)


def test_text_vectors_count_hashed_ngrams_and_signatures_describe_the_text() -> None:
    codec = InputCodec(TEXT)
    e = codec.encode_text("Refund my ORDER 123 please, refund!")
    assert e.model_input.shape == (64,) and e.model_input.sum() == 6 + 5  # six words, five bigrams
    assert e.stored.decode() == "Refund my ORDER 123 please, refund!"
    names = codec.schema().names
    sig = dict(zip(names, e.features.tolist(), strict=True))
    assert sig["digit_share"] == pytest.approx(3 / 35) and sig["upper_share"] == pytest.approx(6 / 35)
    assert np.array_equal(codec.encode_stored(e.stored), e.model_input)


def test_hashing_is_the_same_in_another_process() -> None:
    """No per-process salt (Python's hash() has one): ingest, trainer and gateway agree."""
    code = (
        "from services.preprocessing import InputCodec;from services.projects.spec import TextInput;"
        "c=InputCodec(TextInput(kind='text',hash_dim=64));"
        "print(c.encode_text('hello world again').model_input.nonzero()[0].tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = InputCodec(TextInput(kind="text", hash_dim=64)).encode_text("hello world again").model_input
    assert json.loads(out) == here.nonzero()[0].tolist()
