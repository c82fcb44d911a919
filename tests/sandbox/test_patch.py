"""The three PATCH formats, against the examples of their specifications."""

from __future__ import annotations

import pytest

from rlscale.sandbox.apiserver.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchApplyError,
    PatchFormatError,
    apply_patch,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

# RFC 7386 appendix A: (original, patch, result)
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc_7386_appendix_a(
    original: object, patch: object, expected: object
) -> None:
    assert merge_patch(original, patch) == expected


def test_merge_patch_does_not_modify_its_input() -> None:
    original = {"spec": {"replicas": 1}}
    merge_patch(original, {"spec": {"replicas": 2}})
    assert original == {"spec": {"replicas": 1}}


def test_json_patch_applies_each_rfc_6902_operation() -> None:
    doc = {
        "spec": {"replicas": 1, "list": ["a", "c"]},
        "metadata": {"labels": {"a/b": "x", "m~n": "y"}},
    }
    out = json_patch(
        doc,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/list/1", "value": "b"},
            {"op": "add", "path": "/spec/list/-", "value": "d"},
            {"op": "remove", "path": "/metadata/labels/a~1b"},
            {"op": "copy", "from": "/metadata/labels/m~0n", "path": "/metadata/labels/copied"},
            {"op": "move", "from": "/metadata/labels/m~0n", "path": "/metadata/labels/moved"},
            {"op": "test", "path": "/spec/replicas", "value": 3},
        ],
    )
    assert out == {
        "spec": {"replicas": 3, "list": ["a", "b", "c", "d"]},
        "metadata": {"labels": {"copied": "y", "moved": "y"}},
    }
    assert doc["spec"]["replicas"] == 1  # the input is untouched


def test_json_patch_with_a_failing_test_operation_applies_nothing() -> None:
    with pytest.raises(PatchApplyError, match="testing value /spec/replicas failed"):
        json_patch(
            {"spec": {"replicas": 1}}, [{"op": "test", "path": "/spec/replicas", "value": 2}]
        )


def test_json_patch_replacing_a_missing_path_is_an_apply_error() -> None:
    with pytest.raises(PatchApplyError, match="missing path"):
        json_patch({"spec": {}}, [{"op": "replace", "path": "/spec/replicas", "value": 2}])


def test_json_patch_that_is_not_a_list_of_operations_is_a_format_error() -> None:
    with pytest.raises(PatchFormatError):
        apply_patch(JSON_PATCH, {}, {"op": "add"})
    with pytest.raises(PatchFormatError):
        json_patch({}, [{"op": "frobnicate", "path": "/a"}])


def test_strategic_merge_merges_containers_by_name_and_replaces_other_lists() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "vllm", "image": "v1", "args": ["--a"]},
                {"name": "sidecar", "image": "s1"},
            ],
            "tolerations": [{"key": "gpu"}],
        }
    }
    out = strategic_merge_patch(
        pod,
        {
            "spec": {
                "containers": [{"name": "vllm", "image": "v2"}, {"name": "new", "image": "n1"}],
                "tolerations": [{"key": "other"}],
            }
        },
    )
    assert out["spec"]["containers"] == [
        {"name": "vllm", "image": "v2", "args": ["--a"]},
        {"name": "sidecar", "image": "s1"},
        {"name": "new", "image": "n1"},
    ]
    assert out["spec"]["tolerations"] == [{"key": "other"}]


def test_strategic_merge_understands_patch_directives() -> None:
    pod = {
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
        "metadata": {"labels": {"k": "v"}},
    }
    deleted = strategic_merge_patch(
        pod, {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}
    )
    assert deleted["spec"]["containers"] == [{"name": "b", "image": "y"}]
    replaced = strategic_merge_patch(
        pod, {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    )
    assert replaced["metadata"]["labels"] == {"only": "this"}
    nulled = strategic_merge_patch(pod, {"metadata": {"labels": {"k": None}}})
    assert nulled["metadata"]["labels"] == {}
    ordered = strategic_merge_patch(
        pod, {"$setElementOrder/containers": [{"name": "b"}], "spec": {}}
    )
    assert ordered == pod


def test_apply_patch_dispatches_on_content_type() -> None:
    obj = {"spec": {"replicas": 1}}
    for ctype in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        assert apply_patch(ctype, obj, {"spec": {"replicas": 4}}) == {"spec": {"replicas": 4}}
    assert apply_patch(
        JSON_PATCH, obj, [{"op": "replace", "path": "/spec/replicas", "value": 4}]
    ) == {"spec": {"replicas": 4}}
    with pytest.raises(PatchFormatError):
        apply_patch(MERGE_PATCH, obj, [1])
