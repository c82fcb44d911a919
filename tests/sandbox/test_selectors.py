"""Label and field selector syntax, as `?labelSelector=` and `spec.selector` use it."""

from __future__ import annotations

import pytest

from rlscale.sandbox.apiserver.selectors import FieldSelector, LabelSelector

LABELS = {"app": "llm", "tier": "gpu", "env": "prod"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=llm", True),
        ("app==llm", True),
        ("app!=llm", False),
        ("app=other", False),
        ("missing!=x", True),
        ("env in (prod,staging)", True),
        ("env notin (prod, staging)", False),
        ("missing notin (a)", True),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("app=llm,env in (dev),tier", False),
        ("app=llm, env in (prod, dev), tier", True),
    ],
)
def test_label_selector_string_syntax(selector: str, matches: bool) -> None:
    assert LabelSelector.parse(selector).matches(LABELS) is matches


def test_label_selector_from_match_labels_and_expressions_round_trips_to_a_string() -> None:
    sel = LabelSelector.from_label_selector(
        {
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["x", "y"]}],
        }
    )
    assert sel.to_string() == "a=1,b=2,c in (x,y)"
    assert LabelSelector.parse(sel.to_string()) == sel


def test_bad_label_selector_is_rejected() -> None:
    with pytest.raises(ValueError):
        LabelSelector.parse("app=(")


def test_field_selector_matches_dotted_paths_and_rejects_unsupported_fields() -> None:
    pod = {"metadata": {"name": "p1"}, "status": {"phase": "Running"}}
    supported = ("metadata.name", "status.phase")
    assert FieldSelector.parse("metadata.name=p1,status.phase!=Pending", supported).matches(pod)
    assert not FieldSelector.parse("status.phase=Pending", supported).matches(pod)
    with pytest.raises(ValueError, match="not supported"):
        FieldSelector.parse("spec.foo=1", supported)
