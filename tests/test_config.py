"""`rlscale.config`: YAML into a pydantic model, the first error as one line naming file, field
(dotted, list indices included) and what was expected, in the controller's wording."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from rlscale.config import apply_override, load_yaml_model, read_yaml_documents, validate_model
from rlscale.errors import InputError


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    copies: int = Field(default=1, ge=1)


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    gamma: float = Field(default=0.99, gt=0, le=1)
    items: list[Item] = []


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "doc.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("gamma: 0.9\n", "field 'name': required field is missing"),
        ("name: a\ngamme: 0.9\n", "field 'gamme': unknown field"),
        (
            "name: a\ngamma: 1.5\n",
            "field 'gamma': Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            "name: a\nitems: [{copies: 0}]\n",
            "field 'items.0.copies': Input should be greater than or equal to 1 (got 0)",
        ),
        ("- a\n- b\n", "expected a mapping of fields at the top level, got list"),
        ("", "field 'name': required field is missing"),  # an empty file is an empty mapping
    ],
)
def test_the_first_error_is_one_line_naming_file_field_and_expectation(tmp_path, text, line):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_yaml_model(p, Doc)
    assert str(e.value) == (f"{p}, {line}" if line.startswith("field") else f"{p}: {line}")


def test_unreadable_files_are_input_errors_with_the_row(tmp_path):
    with pytest.raises(InputError, match="not valid YAML") as e:
        load_yaml_model(write(tmp_path, "name: [unclosed\n"), Doc)
    assert e.value.row is not None
    with pytest.raises(InputError, match="file not found"):
        load_yaml_model(tmp_path / "nope.yaml", Doc)
    with pytest.raises(InputError, match="HPA manifest not found"):
        read_yaml_documents(tmp_path / "nope.yaml", what="HPA manifest")
    with pytest.raises(InputError, match="cannot read the file"):
        load_yaml_model(tmp_path, Doc)


def test_overrides_reach_nested_fields_and_list_entries(tmp_path):
    p = write(tmp_path, "name: a\nitems: [{copies: 1}, {copies: 2}]\n")
    doc = load_yaml_model(p, Doc, overrides=["gamma=0.5", "items.1.copies=7"])
    assert doc.gamma == 0.5 and doc.items[1].copies == 7


@pytest.mark.parametrize(
    ("override", "field", "problem"),
    [
        ("items.9.copies=2", "items.9", "the list has 2 entries (indices 0..1)"),
        ("items.first.copies=2", "items.first", "expected a list index"),
        ("name.first=b", "name", "name is a value, not a section"),
        ("gamma", "--set", "expected key.path=value"),
        ("gamma=[1", "gamma", "not valid YAML"),
    ],
)
def test_a_bad_override_is_one_input_error_line(override, field, problem):
    raw = {"name": "a", "items": [{"copies": 1}, {"copies": 2}]}
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(")", r"\)")) as e:
        apply_override(raw, override, "doc.yaml")
    assert e.value.field == field and e.value.where == "doc.yaml" and "\n" not in str(e.value)


def test_validate_model_names_where_the_data_came_from():
    with pytest.raises(InputError) as e:
        validate_model({"name": "a", "items": [{"copies": "many"}]}, Doc, "<inline>")
    assert e.value.where == "<inline>" and e.value.field == "items.0.copies"
