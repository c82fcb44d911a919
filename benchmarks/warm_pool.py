"""When does a warm pool pay, per standby tier? Writes benchmarks/results/warm_pool.json (+ .md).

    python benchmarks/warm_pool.py [--seeds 5] [--profile P ...] [--trace T ...] [--no-requests]
        [--scales 0.5,0.6,...] [--ppo]

On the test windows (`train_eval.HELD_OUT`) for both profiles, the tuned rule with no pool
(`tuned`) against the seed system's fixed pool of 2 (`tuned#warm=2`) for each tier of
`profiles.standby` (sleeping replicas, warm nodes, preloaded nodes; `SimConfig.standby_tier`):
cost, SLO attainment, scale events and cold starts per day, at the rule's own setting. Then at
equal SLO: the rule's `target_scale` dial is swept with and without the pool, each sweep reduced
to its Pareto frontier (`evaluation.frontier.cost_at`), and the pool's cost is read at the
no-pool rule's own attainment ("cost at equal SLO"; NaN where that attainment is outside the
pooled frontier). `--ppo` adds the shipped checkpoints held at `#warm=2` (nothing is trained);
the checkpoints that learned to size their own pool are `benchmarks/learned_pool.py`'s.
`--requests` windows (default: the Azure conversation hour) also run through the request-level
engine, at the rule's own setting only.

Every run uses the same seeds, and every tier of a (profile, window, seed) meets the same
cold-start pool (`rollout`: the generator is seeded by the seed list; the sleeping tier draws
nothing extra, the node tiers draw their fill pool after it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.contract import FIELD_INDEX
from rlscale.evaluation.evaluate import EvalSettings, load_source, request_replay, scale_for_profile
from rlscale.evaluation.frontier import cost_at
from rlscale.evaluation.rollout import rollout
from rlscale.policies.registry import default_limits, make_policy
from rlscale.policies.warm import SEED_WARM_POOL
from rlscale.profiles.model import load_profile
from rlscale.profiles.standby import TIERS, standby
from rlscale.serving.model import SimConfig
from rlscale.traces.transforms import rate_factor

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HELD_OUT = [  # as benchmarks/train_eval.py
    f"{DATA}/azure_llm_2023_conv.csv",
    f"{DATA}/servegen_reason_deepseek-r1_total_10min.csv@0.25:0.75",
    f"{DATA}/servegen_language_m-large_total_10min.csv@11:11.5",
    f"{DATA}/servegen_language_m-mid_total_10min.csv@11:11.5",
]
PROFILES = ["llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100"]
CHECKPOINTS = {p: f"checkpoints/ppo-{p}" for p in PROFILES}
SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5)
NONE = "none"


def run_policy(spec: str, profile: Any, w: Any, info: dict, settings: EvalSettings, cfg: SimConfig,
               engine: str = "fluid", replay: Any = None) -> dict[str, float]:  # fmt: skip
    """Mean over seeds of one policy on one window under `cfg`, with the seeds' spread of cost
    and SLO. `mean_pool` is the standby members standing by, averaged over the intervals;
    `mean_pool_asked` the pool the decisions ask for (larger while taken members refill)."""
    limits = default_limits(settings.min_replicas, settings.max_replicas, profile.gpus_per_replica)
    f = make_policy(spec, profile=profile, workload=w, limits=limits, config=cfg,
                    slo_target=settings.slo_target, initial_replicas=info["opening_replicas"])  # fmt: skip
    asked: list[float] = []
    f = replace(f, build=_recording_pool(f.build, asked))
    start = int(np.clip(info["opening_replicas"], f.limits.min_replicas, f.limits.max_replicas))
    ro = rollout(f, profile, w, seeds=settings.seeds, limits=f.limits, config=cfg,
                 initial_replicas=start, engine=engine, requests=replay, record=True)  # fmt: skip
    pool = ro.timeline[..., FIELD_INDEX["replicas_warm"]].mean(axis=0)
    days = info["duration_h"] / 24.0
    per = [
        {
            "cost_usd": s.cost_usd,
            "slo": s.slo_attainment,
            "scale_events_per_day": s.scale_events / days,
            "cold_starts_per_day": s.cold_starts / days,
            "mean_replicas": s.mean_replicas,
            "mean_pool": float(pool[i]),
        }
        for i, s in enumerate(ro.summaries)
    ]
    out = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    out["mean_pool_asked"] = float(np.mean(asked)) if asked else 0.0
    out["slo_std"] = float(np.std([p["slo"] for p in per]))
    out["cost_std"] = float(np.std([p["cost_usd"] for p in per]))
    return out


def _recording_pool(build: Any, asked: list[float]) -> Any:
    """`build` whose policies append each decision's warm pool to `asked`."""

    def recorded_build(seed: int) -> Any:
        policy = build(seed)
        decide = policy.decide

        def recorded(window: Any) -> Any:
            d = decide(window)
            asked.append(float(d.warm_replicas or 0))
            return d

        policy.decide = recorded
        return policy

    return recorded_build


def without_spare_nodes(profile: Any) -> Any:
    """`profile` where every cold start provisions a new node, and its image is then uncached with
    the profile's own P(uncached | new node) (pull / node probability): no spare GPU nodes stand
    by for free. The shipped profiles assume 80 % of starts find one (P(new node) = 0.2)."""
    stages = list(profile.cold_start)
    node = next(s for s in stages if "node" in s.name)
    pull = next(s for s in stages if "image_pull" in s.name)
    p_pull = min(pull.probability / node.probability, 1.0)
    new = [
        s.model_copy(update={"probability": 1.0}) if s is node
        else s.model_copy(update={"probability": p_pull}) if s is pull
        else s
        for s in stages
    ]  # fmt: skip
    # the name stays: the tuned rule is the profile's own manifest
    return profile.model_copy(update={"cold_start": new})


def _tier_cfg(base: SimConfig, tier: str) -> SimConfig:
    return replace(base, standby_tier="sleeping" if tier == NONE else tier)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--profile", action="append")
    ap.add_argument("--trace", action="append")
    ap.add_argument("--scales", default=",".join(f"{s:g}" for s in SCALES))
    ap.add_argument("--requests", action="append", help="windows for the request-level engine")
    ap.add_argument("--no-requests", action="store_true")
    ap.add_argument("--ppo", action="store_true", help="add the shipped checkpoints at #warm=2")
    ap.add_argument(
        "--no-spare-nodes",
        action="store_true",
        help="also run each profile with every cold start on a new node (no unpaid spare nodes)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "warm_pool"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args()
    if args.markdown_only:
        path = Path(args.out)
        md = markdown(json.loads(path.with_suffix(".json").read_text()))
        path.with_suffix(".md").write_text(md)
        print(md)
        return
    settings = EvalSettings(seeds=tuple(range(args.seeds)))
    base = settings.config
    scales = [float(x) for x in args.scales.split(",") if x]
    traces = args.trace or HELD_OUT
    req_traces = [] if args.no_requests else (args.requests or [HELD_OUT[0]])
    n = SEED_WARM_POOL
    t_start = time.perf_counter()
    out: dict[str, Any] = {
        "seeds": args.seeds,
        "warm": n,
        "scales": scales,
        "traces": traces,
        "tiers": {},
        "rows": [],
        "frontier": [],
        "requests": [],
        "ppo": [],
    }
    variants = [(p, False) for p in args.profile or PROFILES]
    if args.no_spare_nodes:
        variants += [(p, True) for p in args.profile or PROFILES]
    for base_name, no_spare in variants:
        profile = load_profile(base_name)
        if no_spare:
            profile = without_spare_nodes(profile)
        pname = profile.name + ("+no-spare-nodes" if no_spare else "")
        out["tiers"][pname] = {
            t: {
                "mean_fill_s": standby(profile, t).mean_fill_s,
                "mean_wake_s": standby(profile, t).mean_wake_s,
            }
            for t in TIERS
        } | {"cold_start": {"mean_s": profile.mean_cold_start_s}}
        for trace in traces:
            w, info = scale_for_profile(load_source(trace, base.interval_s), profile, settings)
            key = {"profile": pname, "workload": w.name, "hours": info["duration_h"]}
            print(f"{pname} / {w.name} ({info['duration_h']:.1f} h)", flush=True)
            # at the rule's own setting: none, then the fixed pool per tier
            none = run_policy("tuned", profile, w, info, settings, base)
            out["rows"].append({**key, "tier": NONE, **none})
            for tier in TIERS:
                r = run_policy(f"tuned#warm={n}", profile, w, info, settings, _tier_cfg(base, tier))
                r["cost_vs_none"] = r["cost_usd"] / none["cost_usd"]
                r["slo_gain_pts"] = 100 * (r["slo"] - none["slo"])
                out["rows"].append({**key, "tier": tier, **r})
                print(
                    f"  {tier:15s} cost x{r['cost_vs_none']:.3f}  SLO {r['slo_gain_pts']:+.2f} pts",
                    flush=True,
                )
            # at equal SLO: the dial swept with and without the pool
            sweep = {
                NONE: [
                    run_policy(f"tuned#target_scale={s:g}", profile, w, info, settings, base)
                    for s in scales
                ]
            }
            for tier in TIERS:
                cfg = _tier_cfg(base, tier)
                sweep[tier] = [
                    run_policy(
                        f"tuned#target_scale={s:g},warm={n}", profile, w, info, settings, cfg
                    )
                    for s in scales
                ]
            at = none["slo"]
            c_none = cost_at([(p["slo"], p["cost_usd"]) for p in sweep[NONE]], at)
            row = {**key, "at_slo": at, "none_cost_at_slo": c_none, "points": sweep}
            for tier in TIERS:
                c = cost_at([(p["slo"], p["cost_usd"]) for p in sweep[tier]], at)
                row[f"{tier}_cost_at_slo"] = c
                row[f"{tier}_vs_none_at_slo"] = (
                    c / c_none if math.isfinite(c) and c_none > 0 else math.nan
                )
            out["frontier"].append(row)
            print(
                "  at equal SLO: "
                + ", ".join(f"{t} x{row[f'{t}_vs_none_at_slo']:.3f}" for t in TIERS),
                flush=True,
            )
            if args.ppo and not no_spare and (ROOT / CHECKPOINTS[base_name]).exists():
                ck = f"ppo:{ROOT / CHECKPOINTS[base_name]}"
                p_none = run_policy(ck, profile, w, info, settings, base)
                out["ppo"].append({**key, "tier": "ppo", **p_none})
                for tier in TIERS:
                    r = run_policy(
                        f"{ck}#warm={n}", profile, w, info, settings, _tier_cfg(base, tier)
                    )
                    out["ppo"].append(
                        {
                            **key,
                            "tier": tier,
                            "cost_vs_ppo": r["cost_usd"] / p_none["cost_usd"],
                            **r,
                        }
                    )
            if trace in req_traces and not no_spare:
                replay = request_replay(trace, rate_factor(w))
                rn = run_policy("tuned", profile, w, info, settings, base, "requests", replay)
                out["requests"].append({**key, "tier": NONE, **rn})
                for tier in TIERS:
                    r = run_policy(
                        f"tuned#warm={n}",
                        profile,
                        w,
                        info,
                        settings,
                        _tier_cfg(base, tier),
                        "requests",
                        replay,
                    )
                    r["cost_vs_none"] = r["cost_usd"] / rn["cost_usd"]
                    r["slo_gain_pts"] = 100 * (r["slo"] - rn["slo"])
                    out["requests"].append({**key, "tier": tier, **r})
    out["elapsed_s"] = time.perf_counter() - t_start
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1, default=float))
    md = markdown(out)
    path.with_suffix(".md").write_text(md)
    print(md)


def _short(w: str) -> str:
    return (
        w.replace("servegen_", "").replace("_total_10min", "").replace("azure_llm_2023_", "azure-")
    )


def markdown(out: dict[str, Any]) -> str:
    n = out["warm"]
    lines = [
        f"Tuned rule, no pool vs a fixed pool of {n} per standby tier; {out['seeds']} seeds, fluid engine.",
        "",
        "Standby tiers (mean seconds):",
        "",
        "| profile | cold start | tier | fill | wake |",
        "|---|---:|---|---:|---:|",
    ]
    for p, tiers in out["tiers"].items():
        for t in TIERS:
            lines.append(
                f"| {p} | {tiers['cold_start']['mean_s']:.0f} | {t} | {tiers[t]['mean_fill_s']:.0f} | {tiers[t]['mean_wake_s']:.0f} |"
            )
    lines += [
        "",
        "At the rule's own setting (cost x = pooled / no pool; SLO in points):",
        "",
        "| profile | workload | tier | cost $ | SLO % | cost x | SLO +pts | scale events/day | cold starts/day |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        x = "" if r["tier"] == NONE else f"{r['cost_vs_none']:.3f}"
        g = "" if r["tier"] == NONE else f"{r['slo_gain_pts']:+.2f}"
        lines.append(
            f"| {r['profile']} | {_short(r['workload'])} | {r['tier']} | {r['cost_usd']:.1f} | {100 * r['slo']:.2f} | {x} | {g} | {r['scale_events_per_day']:.0f} | {r['cold_starts_per_day']:.0f} |"
        )
    lines += [
        "",
        "At equal SLO (each `target_scale` sweep's frontier read at the no-pool rule's attainment; "
        "cost x = pooled / no pool; n/a = outside the pooled frontier):",
        "",
        "| profile | workload | at SLO % | no pool $ | "
        + " | ".join(f"{t} x" for t in TIERS)
        + " |",
        "|---|---|---:|---:|" + "---:|" * len(TIERS),
    ]

    def fx(v: float) -> str:
        return f"{v:.3f}" if math.isfinite(v) else "n/a"

    for r in out["frontier"]:
        lines.append(
            f"| {r['profile']} | {_short(r['workload'])} | {100 * r['at_slo']:.2f} | {r['none_cost_at_slo']:.1f} | "
            + " | ".join(fx(r[f"{t}_vs_none_at_slo"]) for t in TIERS)
            + " |"
        )
    lines += [
        "",
        "At the highest attainment the no-pool sweep reaches (where a pool is bought for the tail), "
        "and the highest each sweep reaches:",
        "",
        "| profile | workload | at SLO % | "
        + " | ".join(f"{t} x" for t in TIERS)
        + " | best SLO %: none / "
        + " / ".join(TIERS)
        + " |",
        "|---|---|---:|" + "---:|" * len(TIERS) + "---|",
    ]
    for r in out["frontier"]:
        pts = {t: [(p["slo"], p["cost_usd"]) for p in r["points"][t]] for t in r["points"]}
        top = max(a for a, _ in pts[NONE])
        c_none = cost_at(pts[NONE], top)
        ratios = [cost_at(pts[t], top) / c_none for t in TIERS]
        best = " / ".join(f"{100 * max(a for a, _ in pts[t]):.2f}" for t in (NONE, *TIERS))
        lines.append(
            f"| {r['profile']} | {_short(r['workload'])} | {100 * top:.2f} | "
            + " | ".join(fx(x) for x in ratios)
            + f" | {best} |"
        )
    if out["requests"]:
        lines += ["", "Request-level engine, at the rule's own setting:", "",
                  "| profile | workload | tier | cost $ | SLO % | cost x | SLO +pts | cold starts/day |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in out["requests"]:
            x = "" if r["tier"] == NONE else f"{r['cost_vs_none']:.3f}"
            g = "" if r["tier"] == NONE else f"{r['slo_gain_pts']:+.2f}"
            lines.append(
                f"| {r['profile']} | {_short(r['workload'])} | {r['tier']} | {r['cost_usd']:.1f} | {100 * r['slo']:.2f} | {x} | {g} | {r['cold_starts_per_day']:.0f} |"
            )
    if out["ppo"]:
        lines += ["", f"Shipped checkpoints held at #warm={n} (nothing trained):", "",
                  "| profile | workload | tier | cost $ | SLO % | cost x ppo |", "|---|---|---|---:|---:|---:|"]  # fmt: skip
        for r in out["ppo"]:
            x = f"{r['cost_vs_ppo']:.3f}" if "cost_vs_ppo" in r else ""
            lines.append(
                f"| {r['profile']} | {_short(r['workload'])} | {r['tier']} | {r['cost_usd']:.1f} | {100 * r['slo']:.2f} | {x} |"
            )
    lines.append("")
    lines.append(f"({out['elapsed_s']:.0f} s)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
