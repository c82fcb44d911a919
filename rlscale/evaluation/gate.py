"""The release gate: required margins of a candidate policy against a named reference.

A requirement is `METRIC OP [FACTOR *] REFERENCE` or `METRIC OP NUMBER`:

    cost <= 0.85 * tuned      the candidate's mean cost is at most 85 % of tuned's
    slo >= tuned              its SLO attainment is at least tuned's
    slo >= 0.99               at least 99 % of requests within the SLO
    ttft_p95 <= 2             absolute bound, in the metric's unit (seconds)

Metrics: cost (cost_usd), slo (slo_attainment), gpu_hours, cost_vs_oracle, ttft_p50/p95/p99,
tpot_p50/p95/p99, dropped, scale_events, cold_starts, mean_replicas, or any other metric of the
evaluation's records (`rlscale.evaluation.evaluate.METRIC_FIELDS`, and each one's `_std`); an
unknown metric is an error when the gate is read, before anything is evaluated.
A requirement is checked on every (profile, workload) on the mean over seeds, and the gate passes
only if all hold everywhere.

With `--frontier`, the frontier numbers are gate metrics too (`rlscale.evaluation.frontier`):
`cost@slo` (cost at the SLO point, read off each family's frontier), `cost@slo_vs_best_rule`,
`cost@slo_vs_oracle`, `gap_closed@slo`; their references are family names and `best_rule`,
`best_oracle`, e.g. `cost@slo <= 0.9 * tuned`, `cost@slo_vs_best_rule <= 0.9`. A number outside
a frontier (NaN) fails the requirement. A YAML gate file:

    policy: ppo:checkpoints/v3      # the candidate (optional: default the first --policy)
    require:
      - cost <= 0.85 * tuned
      - slo >= tuned
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rlscale.config import load_yaml_model
from rlscale.errors import InputError
from rlscale.evaluation.evaluate import METRIC_FIELDS
from rlscale.evaluation.frontier import FRONTIER_METRICS

ALIASES = {
    "cost": "cost_usd",
    "slo": "slo_attainment",
    "ttft_p50": "ttft_p50_s",
    "ttft_p95": "ttft_p95_s",
    "ttft_p99": "ttft_p99_s",
    "tpot_p50": "tpot_p50_s",
    "tpot_p95": "tpot_p95_s",
    "tpot_p99": "tpot_p99_s",
}
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_REQ = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_@]*)\s*(<=|>=|<|>)\s*(?:([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*[*x×]\s*)?([^=<>\s].*?)\s*$"
)
_FIELDS = (*METRIC_FIELDS, *FRONTIER_METRICS)
METRICS: tuple[str, ...] = (*_FIELDS, *(f"{k}_std" for k in _FIELDS))
_NUMBER = re.compile(r"^[+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Requirement:
    text: str
    metric: str
    op: str
    factor: float
    reference: str | None  # a policy name, or None for an absolute bound
    bound: float | None

    def describe(self) -> str:
        return self.text


def parse_requirement(
    text: str, where: str | Path = "--gate", field: str | None = None
) -> Requirement:
    m = _REQ.match(text)
    if not m:
        raise InputError(
            where,
            f"cannot read gate requirement {text!r}; expected e.g. 'cost<=0.85*tuned' or 'slo>=0.99'",
            field=field,
        )
    metric, op, factor, rhs = m.group(1), m.group(2), m.group(3), m.group(4)
    key = ALIASES.get(metric, metric)
    if key not in METRICS:
        raise InputError(
            where,
            f"{text!r}: unknown metric {metric!r}; expected one of {', '.join([*ALIASES, *_FIELDS])} "
            "(or a metric's _std)",
            field=field,
        )
    if _NUMBER.match(rhs):
        if factor is not None:
            raise InputError(
                where,
                f"{text!r}: a factor needs a reference policy, e.g. 'cost<=0.85*tuned'",
                field=field,
            )
        return Requirement(text.strip(), key, op, 1.0, None, float(rhs))
    return Requirement(text.strip(), key, op, float(factor) if factor else 1.0, rhs.strip(), None)


@dataclass(frozen=True)
class Gate:
    requirements: tuple[Requirement, ...]
    policy: str | None = None  # the candidate; None: chosen by the caller


def gate_from_args(requirements: Sequence[str], policy: str | None = None) -> Gate:
    return Gate(tuple(parse_requirement(r) for r in requirements), policy)


class GateFile(BaseModel):
    """A gate YAML file as written: the candidate (optional) and its requirements."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    policy: str | None = None
    require: list[str] = Field(min_length=1)


def load_gate(path: str | Path) -> Gate:
    p = Path(path)
    data = load_yaml_model(p, GateFile, what="gate file")
    reqs = tuple(parse_requirement(r, p, field=f"require.{i}") for i, r in enumerate(data.require))
    return Gate(reqs, data.policy)


@dataclass(frozen=True)
class Check:
    requirement: Requirement
    profile: str
    workload: str
    passed: bool
    message: str


def _find(rows: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for r in rows:
        if r["policy"] == name or r.get("spec") == name:
            return r
    return None


def check_gate(
    gate: Gate,
    aggregates: Sequence[dict[str, Any]],
    candidate: str,
    frontier_rows: Sequence[dict[str, Any]] | None = None,
) -> list[Check]:
    """Check every requirement for `candidate` on every (profile, workload) of `aggregates`
    (records with `"seed": "mean"`); the frontier metrics on `frontier_rows`
    (`FrontierReport.rows`), after the others."""
    plain = [r for r in gate.requirements if r.metric.removesuffix("_std") not in FRONTIER_METRICS]
    front = [r for r in gate.requirements if r not in plain]
    if front and frontier_rows is None:
        raise InputError(
            "--gate",
            f"{front[0].text!r}: {front[0].metric} is a frontier number; add a --frontier "
            "(e.g. --frontier 'target:{0.5..0.9:0.05}')",
        )
    checks = _check(plain, aggregates, candidate) if plain else []
    return checks + (_check(front, frontier_rows or (), candidate) if front else [])


def _check(
    requirements: Sequence[Requirement], aggregates: Sequence[dict[str, Any]], candidate: str
) -> list[Check]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in aggregates:
        groups.setdefault((r["profile"], r["workload"]), []).append(r)
    checks = []
    for (profile, workload), rows in groups.items():
        cand = _find(rows, candidate)
        if cand is None:
            raise InputError(
                "--gate", f"gate policy {candidate!r} was not evaluated on {workload} ({profile})"
            )
        for req in requirements:
            value = cand.get(req.metric)
            if req.metric not in cand:
                raise InputError(
                    "--gate",
                    f"{req.text!r}: unknown metric {req.metric!r}; e.g. cost, slo, ttft_p95, gpu_hours",
                )
            if req.reference is None:
                bound, ref_txt = req.bound, f"{req.bound:g}"
            else:
                ref = _find(rows, req.reference)
                if ref is None:
                    raise InputError(
                        "--gate",
                        f"{req.text!r}: reference policy {req.reference!r} was not evaluated "
                        f"(evaluated: {', '.join(r['policy'] for r in rows)})",
                    )
                bound = None if ref.get(req.metric) is None else req.factor * ref[req.metric]
                ref_txt = (
                    f"{req.factor:g} x " if req.factor != 1 else ""
                ) + f"{req.reference} {_num(ref.get(req.metric))}"
            ok = value is not None and bound is not None and _OPS[req.op](value, bound)
            verdict = "ok" if ok else "FAILED"
            checks.append(
                Check(
                    req,
                    profile,
                    workload,
                    ok,
                    f"{verdict}: {candidate} on {workload} ({profile}): {req.metric} {_num(value)} "
                    f"{req.op if ok else _negate(req.op)} {ref_txt}"
                    + (f" = {_num(bound)}" if req.factor != 1 else "")
                    + f"  [{req.text}]",
                )
            )
    return checks


def _negate(op: str) -> str:
    return {"<=": ">", ">=": "<", "<": ">=", ">": "<="}[op]


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}"
