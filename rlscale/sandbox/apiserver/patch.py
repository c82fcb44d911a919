"""The three patch formats of a PATCH request, by Content-Type:

* `application/merge-patch+json` — RFC 7386: objects merge recursively, `null` deletes a key,
  anything else (lists included) replaces.
* `application/json-patch+json` — RFC 6902: a list of add/remove/replace/move/copy/test
  operations on RFC 6901 pointers.
* `application/strategic-merge-patch+json` — Kubernetes' strategic merge, for the fields this
  sandbox serves: like a merge patch, except that lists with a patch merge key (containers by
  `name`, conditions by `type`, ...) merge element-wise, and the `$patch: replace|delete`
  directives and `$setElementOrder/...` / `$retainKeys` hints are understood.

Errors: a body that is not the right JSON shape raises `PatchFormatError` (the apiserver's 400);
a patch that cannot apply (a failed `test`, a missing path) raises `PatchApplyError` (422).
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH_YAML = "application/apply-patch+yaml"
SUPPORTED = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

# patchMergeKey of the list fields this sandbox's objects carry (from the Kubernetes API types).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}


class PatchFormatError(ValueError):
    """The patch body is not a valid document of its format."""


class PatchApplyError(ValueError):
    """The patch is well-formed but cannot be applied to this object."""


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply `patch` (already JSON-decoded) of media type `content_type`; returns a new object."""
    if content_type == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchFormatError("merge patch must be a JSON object")
        return merge_patch(target, patch)
    if content_type == STRATEGIC_MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchFormatError("strategic merge patch must be a JSON object")
        result = strategic_merge_patch(target, patch)
        if not isinstance(result, dict):
            raise PatchApplyError("strategic merge patch deleted the whole object")
        return result
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise PatchFormatError("json patch must be a JSON array of operations")
        return json_patch(target, patch)
    raise PatchFormatError(f"unsupported patch type {content_type}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, MergePatch(Target, Patch)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_DELETE = object()


def strategic_merge_patch(target: Any, patch: dict[str, Any]) -> Any:
    out = _smp_map(target if isinstance(target, dict) else {}, patch)
    return None if out is _DELETE else out


def _smp_map(target: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive not in (None, "merge"):
        raise PatchFormatError(f"unknown patch directive $patch: {directive!r}")
    result = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if not isinstance(value, list):
                raise PatchFormatError(f"{key} must be a list")
            if isinstance(result.get(name), list):
                result[name] = [x for x in result[name] if x not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _smp_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list):
            result[key] = [
                {k: v for k, v in x.items() if k != "$patch"} if isinstance(x, dict) else x
                for x in value
                if not (isinstance(x, dict) and x.get("$patch") == "delete")
            ]
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(target: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [
            copy.deepcopy(x)
            for x in patch
            if not (isinstance(x, dict) and x.get("$patch") == "replace")
        ]
    result = copy.deepcopy(target)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchFormatError(f"list item {item!r} has no merge key {merge_key!r}")
        index = next(
            (
                i
                for i, x in enumerate(result)
                if isinstance(x, dict) and x.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            merged = _smp_map(result[index], item)
            if merged is _DELETE:
                del result[index]
            else:
                result[index] = merged
    return result


def json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902; the operations apply in order to a copy, all or nothing."""
    doc: Any = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchFormatError(f"invalid json patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, _value(op))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path)
            doc = _add(doc, path, _value(op))
        elif kind == "move":
            doc, moved = _remove(doc, _from(op))
            doc = _add(doc, path, moved)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, _from(op))))
        elif kind == "test":
            if _get(doc, path) != _value(op):
                raise PatchApplyError(f"testing value {path} failed")
        else:
            raise PatchFormatError(f"unexpected json patch operation {kind!r}")
    if not isinstance(doc, dict):
        raise PatchApplyError("json patch replaced the object with a non-object")
    return doc


def _value(op: dict[str, Any]) -> Any:
    if "value" not in op:
        raise PatchFormatError(f"operation {op['op']!r} at {op['path']!r} has no value")
    return copy.deepcopy(op["value"])


def _from(op: dict[str, Any]) -> str:
    if "from" not in op:
        raise PatchFormatError(f"operation {op['op']!r} at {op['path']!r} has no from")
    return op["from"]


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchFormatError(f"json pointer {pointer!r} must start with /")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    node = doc
    for t in tokens[:-1]:
        if isinstance(node, dict) and t in node:
            node = node[t]
        elif isinstance(node, list) and t.isdigit() and int(t) < len(node):
            node = node[int(t)]
        else:
            raise PatchApplyError(f"doc is missing path: {pointer}")
    return node


def _get(doc: Any, pointer: str) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchApplyError(f"doc is missing path: {pointer}")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return value
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchApplyError(f"add operation index out of bounds: {pointer}")
    else:
        raise PatchApplyError(f"doc is missing path: {pointer}")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchApplyError("cannot remove the whole document")
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return doc, parent.pop(int(last))
    raise PatchApplyError(f"doc is missing path: {pointer}")
