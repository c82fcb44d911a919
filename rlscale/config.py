"""The one way a YAML file becomes a validated pydantic model, and its error one line.

    cfg = load_yaml_model("training/default.yaml", TrainConfig, overrides=["ppo.gamma=0.98"])

Every problem is an `InputError` naming the file, the field (a dotted path, list indices
included: `workloads.0.copies`) and what was expected, in the controller's wording:

    training/default.yaml, field 'ppo.gamma': Input should be less than or equal to 1 (got 1.5)
    hpa.yaml, field 'spec.behavior.scaleUp.stabilisationWindowSeconds': unknown field
    profile.yaml, field 'latency.kv_cache_tokens': required field is missing

An empty file is an empty mapping (its first required field is then what the error names).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from rlscale.errors import InputError

M = TypeVar("M", bound=BaseModel)


def describe_error(err: ErrorDetails) -> tuple[str, str]:
    """(dotted field path, what was expected) of one pydantic error."""
    loc = ".".join(str(x) for x in err["loc"])
    if err["type"] == "missing":
        return loc, "required field is missing"
    if err["type"] == "extra_forbidden":
        return loc, "unknown field"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, dict | list) or value is None:
        return loc, msg
    return loc, f"{msg} (got {value!r})"


def validate_model(data: Any, model: type[M], where: str) -> M:
    """`model` from parsed data; the first validation error as one `InputError` line."""
    if not isinstance(data, dict):
        raise InputError(
            where, f"expected a mapping of fields at the top level, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        loc, problem = describe_error(e.errors()[0])
        raise InputError(where, problem, field=loc or None) from None


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise InputError(path, f"{what} not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read the {what} ({e.__class__.__name__})") from None


def _yaml_error(path: Path, e: yaml.YAMLError) -> InputError:
    mark = getattr(e, "problem_mark", None)
    row = mark.line + 1 if mark is not None else None
    return InputError(
        path, f"not valid YAML ({getattr(e, 'problem', None) or e.__class__.__name__})", row=row
    )


def read_yaml(path: str | Path, *, what: str = "file") -> Any:
    """The one YAML document of a file (None when empty). `what` names the file in errors
    ("HPA manifest not found")."""
    p = Path(path)
    text = _read_text(p, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _yaml_error(p, e) from None


def read_yaml_documents(path: str | Path, *, what: str = "file") -> list[Any]:
    """Every non-empty document of a multi-document YAML file (`---` separated)."""
    p = Path(path)
    text = _read_text(p, what)
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise _yaml_error(p, e) from None


def apply_override(raw: dict[str, Any], override: str, where: str | Path = "--set") -> None:
    """`a.b.c=value` into the nested dict `raw` (value parsed as YAML: numbers, lists, null);
    a number indexes a list (`workloads.0.copies=3`)."""
    key, sep, value = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(where, f"--set {override!r}: expected key.path=value", field="--set")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise InputError(
            where,
            f"--set {override!r}: the value is not valid YAML ({e.__class__.__name__})",
            field=key,
        ) from None
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, override, where, here)
            if last:
                node[index] = parsed
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = parsed
            else:
                node = node.setdefault(part, {})
        else:
            parent = ".".join(parts[:depth])
            raise InputError(
                where, f"--set {override!r}: {parent} is a value, not a section", field=parent
            )


def _list_index(node: list[Any], part: str, override: str, where: str | Path, here: str) -> int:
    if not part.isdigit():
        raise InputError(
            where,
            f"--set {override!r}: expected a list index (0..{len(node) - 1}), got {part!r}",
            field=here,
        )
    index = int(part)
    if index >= len(node):
        span = f"0..{len(node) - 1}" if node else "none: the list is empty"
        raise InputError(
            where,
            f"--set {override!r}: the list has {len(node)} entries (indices {span})",
            field=here,
        )
    return index


def load_yaml_model(
    path: str | Path, model: type[M], *, overrides: Sequence[str] = (), what: str = "file"
) -> M:
    """Read `path`, apply `--set` style `overrides`, validate as `model`."""
    p = Path(path)
    data = read_yaml(p, what=what)
    if data is None:
        data = {}
    if overrides and isinstance(data, dict):
        for o in overrides:
            apply_override(data, o, p)
    return validate_model(data, model, str(p))
