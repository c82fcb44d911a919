"""Label and field selectors, in the string syntax of `?labelSelector=` / `?fieldSelector=` and
the `matchLabels` / `matchExpressions` form of a Deployment's `spec.selector`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present  # "!"

    def to_string(self) -> str:
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        return self.key if self.op == "exists" else f"!{self.key}"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def to_string(self) -> str:
        return ",".join(r.to_string() for r in self.requirements)

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse `app=web,tier!=db,env in (a,b),!legacy`; raises ValueError on bad syntax."""
        if not text or not text.strip():
            return cls()
        reqs = []
        for part in _split_top_level(text):
            if m := _SET_RE.match(part):
                values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
                reqs.append(Requirement(m["key"], m["op"], values))
            elif m := _EQ_RE.match(part):
                reqs.append(Requirement(m["key"], "!=" if m["op"] == "!=" else "=", (m["value"],)))
            elif m := _EXISTS_RE.match(part):
                reqs.append(Requirement(m["key"], "!" if m["neg"] else "exists"))
            else:
                raise ValueError(f"unable to parse requirement: {part.strip()!r}")
        return cls(tuple(reqs))

    @classmethod
    def from_label_selector(cls, selector: dict[str, Any]) -> LabelSelector:
        """From a metav1.LabelSelector (`matchLabels`, `matchExpressions`)."""
        reqs = [
            Requirement(k, "=", (str(v),))
            for k, v in sorted((selector.get("matchLabels") or {}).items())
        ]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
        for expr in selector.get("matchExpressions") or []:
            op = ops.get(expr.get("operator", ""))
            if op is None:
                raise ValueError(f"{expr.get('operator')!r} is not a valid selector operator")
            reqs.append(
                Requirement(expr["key"], op, tuple(str(v) for v in expr.get("values") or ()))
            )
        return cls(tuple(reqs))


def selector_from_label_selector(selector: dict[str, Any]) -> LabelSelector:
    return LabelSelector.from_label_selector(selector)


@dataclass(frozen=True)
class FieldSelector:
    """`metadata.name=web-1,status.phase!=Running`: equality on dotted paths of the object."""

    terms: tuple[tuple[str, str, str], ...] = ()  # (path, op, value)

    @classmethod
    def parse(cls, text: str | None, supported: tuple[str, ...]) -> FieldSelector:
        if not text or not text.strip():
            return cls()
        terms = []
        for part in text.split(","):
            m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
            if not m:
                raise ValueError(f"invalid selector: {part.strip()!r}")
            path, op, value = m[1], m[2], m[3]
            if path not in supported:
                raise ValueError(f"field label not supported: {path}")
            terms.append((path, "!=" if op == "!=" else "=", value))
        return cls(tuple(terms))

    def matches(self, obj: dict[str, Any]) -> bool:
        for path, op, value in self.terms:
            current: Any = obj
            for part in path.split("."):
                current = current.get(part) if isinstance(current, dict) else None
            actual = "" if current is None else str(current)
            if (actual == value) != (op == "="):
                return False
        return True


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value lists."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]
