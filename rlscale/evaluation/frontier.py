"""Scoring on frontiers: every method's cost read at one SLO attainment, never point against point.

A policy with a dial (the PPO knob `slo_weight`, the rule's utilisation `target:U`, a manifest's
`target_scale`, the oracle's `slo_target`; grammar in `rlscale.evaluation.dials`) traces a curve of
(SLO attainment, cost) points; comparing one point of each says as much about where the dials sat
as about the methods. So, per (profile, workload):

1. Each family's points are averaged over seeds and reduced to their Pareto frontier: the points
   no other point beats on both SLO attainment (higher) and cost (lower).
2. Its cost at SLO attainment `s` is read off the frontier by linear interpolation between the two
   neighbouring points; outside the frontier's attainment range it is NaN ("outside the
   frontier"): a frontier is never extrapolated.
3. `s` is `--at-slo`, or by default the baseline's attainment (compare at the baseline's SLO).
4. Every family is reported against the best rule (the cheapest non-PPO, non-oracle family at `s`)
   and the best oracle at `s`; "gap closed", (rule - candidate) / (rule - oracle), only where the
   best rule costs at least `MIN_GAP` (5 %) more than the oracle: a smaller gap is noise.

A plain `--policy` is a one-point family: it has a cost only at its own attainment (the baseline
at the default `s`, so the baseline's row is its own cost). Standard deviations come from the same
steps on each seed's points (seed k's frontier read at seed k's `s`), one number per seed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlscale.errors import InputError
from rlscale.evaluation.dials import expand_dial
from rlscale.policies.registry import PolicySpec

MIN_GAP = 0.05  # gap closed only where best rule >= (1 + MIN_GAP) x oracle at the SLO point
FRONTIER_METRICS: tuple[str, ...] = (
    "cost@slo",
    "cost@slo_vs_best_rule",
    "cost@slo_vs_oracle",
    "gap_closed@slo",
)
BEST_RULE = "best_rule"
BEST_ORACLE = "best_oracle"
_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(?=[^=]*[:#{])")


@dataclass(frozen=True)
class Frontier:
    """A family of specs from one template; `kind` is the policy kind (ppo, oracle, or a rule)."""

    name: str
    template: str
    specs: tuple[str, ...]
    values: tuple[float, ...]
    kind: str

    @classmethod
    def parse(cls, text: str, where: str = "--frontier") -> Frontier:
        """`[NAME=]TEMPLATE`; the default name is the template with its dial shown as `*`."""
        m = _NAME.match(text)
        name, template = (m.group(1), text[m.end() :]) if m else (None, text)
        specs, values = expand_dial(template, where)
        for s in specs:
            PolicySpec.parse(s, where)
        default = re.sub(r"\{[^{}]*\}", "*", template)
        return cls(name or default, template, tuple(specs), tuple(values), _kind(template))

    @classmethod
    def single(cls, spec: str) -> Frontier:
        return cls(spec, spec, (spec,), (), _kind(spec))

    @property
    def role(self) -> str:
        return self.kind if self.kind in ("ppo", "oracle") else "rule"


def _kind(spec: str) -> str:
    return spec.partition("#")[0].partition(":")[0].strip().lower()


# --- the arithmetic --------------------------------------------------------------------------


def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto set of (SLO attainment, cost) points: those no other point beats on
    both attainment (>=) and cost (<=, one of the two strictly); sorted by attainment, ascending
    (so cost ascends too). Of equal points the first stays; non-finite points are left out."""
    finite = [i for i, (a, c) in enumerate(points) if math.isfinite(a) and math.isfinite(c)]
    # from the highest attainment down, a point stays if it is cheaper than all above it
    order = sorted(finite, key=lambda i: (-points[i][0], points[i][1]))
    keep: list[int] = []
    cheapest = math.inf
    for i in order:
        if points[i][1] < cheapest:
            keep.append(i)
            cheapest = points[i][1]
    return keep[::-1]


def cost_at(points: Sequence[tuple[float, float]], slo: float) -> float:
    """Cost on the Pareto frontier of `points` at attainment `slo`, linear between neighbours;
    NaN outside the frontier's attainment range (never extrapolated)."""
    idx = pareto(points)
    if not idx or not math.isfinite(slo):
        return math.nan
    xs = np.array([points[i][0] for i in idx])
    ys = np.array([points[i][1] for i in idx])
    eps = 1e-12
    if slo < xs[0] - eps or slo > xs[-1] + eps:
        return math.nan
    return float(np.interp(slo, xs, ys))


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def gap_closed(rule: float, candidate: float, oracle: float, min_gap: float = MIN_GAP) -> float:
    """(rule - candidate) / (rule - oracle), NaN where rule < (1 + min_gap) x oracle."""
    if not all(math.isfinite(x) for x in (rule, candidate, oracle)) or oracle <= 0:
        return math.nan
    if rule < (1.0 + min_gap) * oracle:
        return math.nan
    return (rule - candidate) / (rule - oracle)


def _min(values: Sequence[float]) -> tuple[float, int | None]:
    best, at = math.nan, None
    for i, v in enumerate(values):
        if math.isfinite(v) and not (best <= v):
            best, at = v, i
    return best, at


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    v = np.array([x for x in values if math.isfinite(x)], dtype=float)
    if not len(v):
        return None, None, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


# --- scoring an evaluation -------------------------------------------------------------------


@dataclass
class FrontierReport:
    """The frontier section of an evaluation: one row per (profile, workload, family), plus the
    best-rule and best-oracle rows, and every point with its frontier membership."""

    at_slo: float | None  # None: the baseline's attainment per workload
    baseline: str
    families: list[Frontier]
    rows: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    min_gap: float = MIN_GAP

    def groups(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in self.rows:
            out.setdefault((r["profile"], r["workload"]), []).append(r)
        return out


def frontier_specs(frontiers: Sequence[Frontier]) -> list[str]:
    return [s for f in frontiers for s in f.specs]


def score_frontiers(
    records: Sequence[dict[str, Any]],
    frontiers: Sequence[Frontier],
    *,
    baseline: str,
    at_slo: float | None = None,
    min_gap: float = MIN_GAP,
) -> FrontierReport:
    """Score `frontiers` and every other evaluated spec (a one-point family) on the records of an
    evaluation (`EvalResult.records`: per seed and `"seed": "mean"`)."""
    if at_slo is not None and not 0 < at_slo <= 1:
        raise InputError("--at-slo", f"expected 0 < S <= 1, got {at_slo:g}", field="at_slo")
    swept = set(frontier_specs(frontiers))
    singles = [
        Frontier.single(s)
        for s in dict.fromkeys(r["spec"] for r in records)
        if s not in swept and s is not None
    ]
    families = [*singles, *frontiers]
    rep = FrontierReport(at_slo, baseline, families, min_gap=min_gap)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["profile"], r["workload"]), []).append(r)
    for (profile, workload), recs in groups.items():
        _score_group(rep, profile, workload, recs)
    return rep


def _score_group(
    rep: FrontierReport, profile: str, workload: str, recs: Sequence[dict[str, Any]]
) -> None:
    mean = {r["spec"]: r for r in recs if r["seed"] == "mean"}
    seeds = sorted({r["seed"] for r in recs if r["seed"] != "mean"})
    by_seed = {(r["spec"], r["seed"]): r for r in recs if r["seed"] != "mean"}
    base = mean.get(rep.baseline) or next(
        (r for r in mean.values() if r["policy"] == rep.baseline), None
    )
    if rep.at_slo is None and base is None:
        raise InputError("--at-slo", f"the baseline {rep.baseline!r} was not evaluated")
    s_mean = rep.at_slo if rep.at_slo is not None else base["slo_attainment"]  # type: ignore[index]
    s_seed = {
        k: rep.at_slo if rep.at_slo is not None else by_seed[(base["spec"], k)]["slo_attainment"]  # type: ignore[index]
        for k in seeds
    }

    def pts(f: Frontier, seed: Any) -> list[tuple[float, float]]:
        src = [mean.get(s) if seed == "mean" else by_seed.get((s, seed)) for s in f.specs]
        return [
            (_f(r.get("slo_attainment")), _f(r.get("cost_usd"))) if r else (math.nan, math.nan)
            for r in src
        ]

    fams = [f for f in rep.families if any(s in mean for s in f.specs)]
    cost_mean = [cost_at(pts(f, "mean"), s_mean) for f in fams]
    cost_seed = [[cost_at(pts(f, k), s_seed[k]) for k in seeds] for f in fams]

    def best(role: str) -> tuple[float, list[float], str | None]:
        idx = [i for i, f in enumerate(fams) if f.role == role]
        c, at = _min([cost_mean[i] for i in idx])
        per_seed = [_min([cost_seed[i][j] for i in idx])[0] for j in range(len(seeds))]
        return c, per_seed, fams[idx[at]].name if at is not None else None

    rule, rule_seed, rule_name = best("rule")
    orc, orc_seed, orc_name = best("oracle")
    common = {"profile": profile, "workload": workload, "slo_point": s_mean}
    for i, f in enumerate(fams):
        p = pts(f, "mean")
        on = set(pareto(p))
        for j, (spec, (a, c)) in enumerate(zip(f.specs, p, strict=True)):
            r = mean.get(spec, {})
            rep.points.append(
                {
                    **common,
                    "family": f.name,
                    "spec": spec,
                    "policy": r.get("policy"),
                    "slo_attainment": a,
                    "slo_attainment_std": r.get("slo_attainment_std"),
                    "cost_usd": c,
                    "cost_usd_std": r.get("cost_usd_std"),
                    "on_frontier": j in on,
                    # churn: what a cheap point may buy its cost with (issue 13 item 3)
                    "scale_events_per_day": r.get("scale_events_per_day"),
                    "cold_starts_per_day": r.get("cold_starts_per_day"),
                }
            )
        inside = [a for j, (a, _) in enumerate(p) if j in on]
        row = {
            **common,
            "policy": f.name,
            "spec": f.template,
            "role": f.role,
            "points": len(f.specs),
            "on_frontier": len(on),
            "slo_min": min(inside) if inside else None,
            "slo_max": max(inside) if inside else None,
            "best_rule": rule_name,
            "best_oracle": orc_name,
        }
        c, cs = cost_mean[i], cost_seed[i]
        _put(row, "cost@slo", c, cs)
        _put(row, "cost@slo_vs_best_rule", _ratio(c, rule), map(_ratio, cs, rule_seed))
        _put(row, "cost@slo_vs_oracle", _ratio(c, orc), map(_ratio, cs, orc_seed))
        gaps = [
            gap_closed(r_, c_, o_, rep.min_gap)
            for r_, c_, o_ in zip(rule_seed, cs, orc_seed, strict=True)
        ]
        _put(row, "gap_closed@slo", gap_closed(rule, c, orc, rep.min_gap), gaps)
        rep.rows.append(row)
    for name, chosen, c, cs in (
        (BEST_RULE, rule_name, rule, rule_seed),
        (BEST_ORACLE, orc_name, orc, orc_seed),
    ):
        row = {**common, "policy": name, "spec": name, "role": "reference", "family": chosen}
        _put(row, "cost@slo", c, cs)
        rep.rows.append(row)


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)


def _put(row: dict[str, Any], key: str, value: float, per_seed: Any) -> None:
    """`key` from the seed-averaged frontier; `key_std` over the per-seed frontiers."""
    _, std, n = _mean_std(list(per_seed))
    row[key] = value if math.isfinite(value) else None
    row[f"{key}_std"] = std
    row[f"{key}_seeds"] = n
