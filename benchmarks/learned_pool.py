"""None / fixed 2 / learned: does a policy that sizes its own warm pool pay? Writes
benchmarks/results/learned_pool.json (+ .md).

    python benchmarks/learned_pool.py [--seeds 5] [--profile P ...] [--trace T ...]
        [--no-requests] [--no-frontier] [--markdown-only]

Sleeping replicas only: docs/warm-pool.md found them the cheapest tier at the rule's SLO, and the
learned checkpoints were trained on them (`env.standby_tier`, recorded in the manifest). On the
test windows (`warm_pool.HELD_OUT`) of both profiles, five policies:

| row | spec | pool |
|---|---|---|
| `rule none` | `tuned` | none |
| `rule fixed 2` | `tuned#warm=2` | the seed system's fixed 2 |
| `ppo none` | `ppo:checkpoints/ppo-P` | none (trained without one) |
| `ppo fixed 2` | `ppo:checkpoints/ppo-P#warm=2` | fixed 2 beside a network that never saw one |
| `learned` | `ppo:checkpoints/ppo-P-warm` | the network's choice, 0-3 (`training/warm-*.yaml`) |

Each at its own setting (the checkpoints at their default knob), then at equal SLO (all but
`ppo fixed 2`, the CPU budget): each on the Pareto frontier of its own dial (`evaluation.frontier.cost_at`, never extrapolated), the rule's
`target_scale` (`warm_pool.SCALES`), the checkpoints' `slo_weight` (`SLO_WEIGHTS`, the trained
range), read at the no-pool rule's attainment and at the shipped checkpoint's. The Azure
conversation hour also runs through the request-level engine, at the own settings.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from warm_pool import HELD_OUT, PROFILES, ROOT, SCALES, _short, run_policy

from rlscale.evaluation.evaluate import EvalSettings, load_source, request_replay, scale_for_profile
from rlscale.evaluation.frontier import cost_at
from rlscale.policies.warm import SEED_WARM_POOL
from rlscale.profiles.model import load_profile
from rlscale.traces.transforms import rate_factor

TIER = "sleeping"
SLO_WEIGHTS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0)
RULE_NONE, RULE_FIXED, PPO_NONE, PPO_FIXED, LEARNED = (
    "rule none",
    "rule fixed 2",
    "ppo none",
    "ppo fixed 2",
    "learned",
)
ROWS = (RULE_NONE, RULE_FIXED, PPO_NONE, PPO_FIXED, LEARNED)
# the rows whose dial is swept (`ppo fixed 2` at its own setting only: the CPU budget, and a fixed
# pool's frontier is the rule's `rule fixed 2` already)
SWEPT = (RULE_NONE, RULE_FIXED, PPO_NONE, LEARNED)


def learned_dir(profile_name: str) -> Path:
    return ROOT / "checkpoints" / f"ppo-{profile_name}-warm"


def specs(profile_name: str, learned_at: Path) -> dict[str, tuple[str, str, list[str]]]:
    """Per row: (the spec at its own setting, its dial's template, the dial's settings)."""
    n = SEED_WARM_POOL
    shipped = f"ppo:{ROOT / 'checkpoints' / f'ppo-{profile_name}'}"
    learned = f"ppo:{learned_at}"
    scales = [f"target_scale={s:g}" for s in SCALES]
    knobs = [f"slo_weight={w:g}" for w in SLO_WEIGHTS]
    return {
        RULE_NONE: ("tuned", "tuned#{}", scales),
        RULE_FIXED: (f"tuned#warm={n}", f"tuned#{{}},warm={n}", scales),
        PPO_NONE: (shipped, f"{shipped}#{{}}", knobs),
        PPO_FIXED: (f"{shipped}#warm={n}", f"{shipped}#{{}},warm={n}", knobs),
        LEARNED: (learned, f"{learned}#{{}}", knobs),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--profile", action="append")
    ap.add_argument("--trace", action="append")
    ap.add_argument("--no-requests", action="store_true")
    ap.add_argument("--no-frontier", action="store_true", help="own settings only")
    ap.add_argument(
        "--learned", action="append", default=[], help="PROFILE=DIR: another learned checkpoint"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learned_pool"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args()
    path = Path(args.out)
    if args.markdown_only:
        md = markdown(json.loads(path.with_suffix(".json").read_text()))
        path.with_suffix(".md").write_text(md)
        print(md)
        return
    settings = EvalSettings(seeds=tuple(range(args.seeds)))
    cfg = replace(settings.config, standby_tier=TIER)
    traces = args.trace or HELD_OUT
    t_start = time.perf_counter()
    out: dict[str, Any] = {
        "seeds": args.seeds,
        "tier": TIER,
        "warm": SEED_WARM_POOL,
        "scales": list(SCALES),
        "slo_weights": list(SLO_WEIGHTS),
        "traces": traces,
        "cells": [],
        "requests": [],
    }
    learned = {p: learned_dir(p) for p in PROFILES}
    for item in args.learned:
        pname, sep, folder = item.partition("=")
        if not sep or pname not in PROFILES:
            ap.error(f"--learned {item!r}: expected PROFILE=DIR with PROFILE one of {PROFILES}")
        learned[pname] = Path(folder).resolve()
    for pname in args.profile or PROFILES:
        profile = load_profile(pname)
        if not learned[pname].exists():
            print(f"{pname}: no learned-pool checkpoint at {learned[pname]}, skipped", flush=True)
            continue
        rows = specs(pname, learned[pname])
        d = learned[pname]
        out.setdefault("learned", {})[profile.name] = str(
            d.relative_to(ROOT) if d.is_relative_to(ROOT) else d
        )
        for trace in traces:
            w, info = scale_for_profile(load_source(trace, cfg.interval_s), profile, settings)
            cell: dict[str, Any] = {
                "profile": profile.name,
                "workload": w.name,
                "hours": info["duration_h"],
                "own": {},
                "sweeps": {},
            }
            t0 = time.perf_counter()
            for row, (own, dial, values) in rows.items():
                cell["own"][row] = run_policy(own, profile, w, info, settings, cfg)
                if row in SWEPT and not args.no_frontier:
                    cell["sweeps"][row] = [
                        {"dial": v, **run_policy(dial.format(v), profile, w, info, settings, cfg)}
                        for v in values
                    ]
            read_frontiers(cell)
            out["cells"].append(cell)
            print(
                f"{profile.name} / {_short(w.name)}: {time.perf_counter() - t0:.0f} s", flush=True
            )
            print(cell_line(cell), flush=True)
            if trace == HELD_OUT[0] and not args.no_requests:
                replay = request_replay(trace, rate_factor(w))
                req: dict[str, Any] = {"profile": profile.name, "workload": w.name, "own": {}}
                for row, (own, _, _) in rows.items():
                    req["own"][row] = run_policy(
                        own, profile, w, info, settings, cfg, "requests", replay
                    )
                out["requests"].append(req)
    out["elapsed_s"] = time.perf_counter() - t_start
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1, default=float))
    md = markdown(out)
    path.with_suffix(".md").write_text(md)
    print(md)


def read_frontiers(cell: dict[str, Any]) -> None:
    """Each row's cost on its own dial's frontier at two attainments, over the no-pool rule's
    frontier cost there: the rule's own attainment and the shipped checkpoint's."""
    if not cell["sweeps"]:
        return
    pts = {r: [(p["slo"], p["cost_usd"]) for p in sw] for r, sw in cell["sweeps"].items()}
    for ref in (RULE_NONE, PPO_NONE):
        at = cell["own"][ref]["slo"]
        base = cost_at(pts[RULE_NONE], at)
        cell[f"at_{ref.replace(' ', '_')}_slo"] = {
            "slo": at,
            "rule_none_cost_usd": base,
            "cost_vs_rule_none": {r: _ratio(cost_at(pts[r], at), base) for r in pts},
            "cost_vs_rule_none_at_most": {r: _ratio(cost_at_most(pts[r], at), base) for r in pts},
        }


def cost_at_most(points: list[tuple[float, float]], slo: float) -> float:
    """The cheapest point attaining at least `slo`: a bound, not an extrapolation, where `slo` is
    below a frontier's range (every point of the dial attains more: it buys `slo` for at most
    this). NaN when no point attains `slo`."""
    costs = [c for a, c in points if a >= slo]
    return min(costs) if costs else math.nan


def _ratio(cost: float, base: float) -> float:
    return cost / base if math.isfinite(cost) and math.isfinite(base) and base > 0 else math.nan


def fx(v: float, fmt: str = ".3f") -> str:
    return format(v, fmt) if math.isfinite(v) else "n/a"


def _at(a: dict[str, Any], row: str) -> str:
    """The frontier's cost there, else "<= bound" where every point of the dial attains more."""
    x = a["cost_vs_rule_none"][row]
    if math.isfinite(x):
        return f"{x:.3f}"
    bound = a["cost_vs_rule_none_at_most"][row]
    return f"<={bound:.3f}" if math.isfinite(bound) else "n/a"


def cell_line(cell: dict[str, Any]) -> str:
    none = cell["own"][RULE_NONE]
    return "  " + ", ".join(
        f"{r} x{o['cost_usd'] / none['cost_usd']:.3f} {100 * (o['slo'] - none['slo']):+.2f} pts "
        f"pool {o['mean_pool_asked']:.2f} / {o['mean_pool']:.2f}"
        for r, o in cell["own"].items()
    )


def _profile_short(p: str) -> str:
    return "8B" if "8b" in p else "70B"


def markdown(out: dict[str, Any]) -> str:
    lines = [
        f"None / fixed {out['warm']} / learned warm pool, {out['tier']} tier; {out['seeds']} seeds, "
        "fluid engine, the test windows. Cost x and SLO points are against the tuned rule with no "
        "pool (`rule none`); pool = the pool the decisions ask for / the members standing by, means "
        "over the window (a taken member refills in a cold start).",
        "",
        "At each policy's own setting (checkpoints at their default knob):",
        "",
        "| profile | window | policy | cost $ | SLO % | cost x | SLO pts | scale ev/day | cold starts/day | pool |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in out["cells"]:
        none = c["own"][RULE_NONE]
        for r, o in c["own"].items():
            lines.append(
                f"| {_profile_short(c['profile'])} | {_short(c['workload'])} | {r} | {o['cost_usd']:.1f} | "
                f"{100 * o['slo']:.2f} | {o['cost_usd'] / none['cost_usd']:.3f} | "
                f"{100 * (o['slo'] - none['slo']):+.2f} | {o['scale_events_per_day']:.0f} | "
                f"{o['cold_starts_per_day']:.0f} | {o['mean_pool_asked']:.2f} / {o['mean_pool']:.2f} |"
            )
    frontier = [c for c in out["cells"] if c["sweeps"]]
    for ref in (RULE_NONE, PPO_NONE):
        key = f"at_{ref.replace(' ', '_')}_slo"
        if not frontier:
            break
        lines += [
            "",
            f"At equal SLO, read at the `{ref}` attainment: cost on each policy's own dial frontier "
            "(rule: target_scale; checkpoints: slo_weight) over the no-pool rule's frontier; "
            "<=x: every point of that dial attains more, the cheapest costs x; n/a: no point "
            "attains it (never extrapolated):",
            "",
            "| profile | window | at SLO % | " + " | ".join(SWEPT) + " |",
            "|---|---|---:|" + "---:|" * len(SWEPT),
        ]
        for c in frontier:
            a = c[key]
            lines.append(
                f"| {_profile_short(c['profile'])} | {_short(c['workload'])} | {100 * a['slo']:.2f} | "
                + " | ".join(_at(a, r) for r in SWEPT)
                + " |"
            )
    if frontier:
        lines += [
            "",
            "Highest attainment on each dial:",
            "",
            "| profile | window | " + " | ".join(SWEPT) + " |",
            "|---|---|" + "---:|" * len(SWEPT),
        ]
        for c in frontier:
            lines.append(
                f"| {_profile_short(c['profile'])} | {_short(c['workload'])} | "
                + " | ".join(f"{100 * max(p['slo'] for p in c['sweeps'][r]):.2f}" for r in SWEPT)
                + " |"
            )
    if out["requests"]:
        lines += [
            "",
            "Request-level engine, at the own settings:",
            "",
            "| profile | window | policy | cost $ | SLO % | cost x | SLO pts | cold starts/day | pool |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for q in out["requests"]:
            none = q["own"][RULE_NONE]
            for r, o in q["own"].items():
                lines.append(
                    f"| {_profile_short(q['profile'])} | {_short(q['workload'])} | {r} | {o['cost_usd']:.1f} | "
                    f"{100 * o['slo']:.2f} | {o['cost_usd'] / none['cost_usd']:.3f} | "
                    f"{100 * (o['slo'] - none['slo']):+.2f} | {o['cold_starts_per_day']:.0f} | "
                    f"{o['mean_pool_asked']:.2f} / {o['mean_pool']:.2f} |"
                )
    lines += ["", f"({out['elapsed_s']:.0f} s)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
