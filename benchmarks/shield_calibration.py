"""Choose the run-time shield's utilisations on the validation windows (issue 13, items 4 and 7).

The shield (`rlscale.serving.shield`) bounds a learned policy from below: a floor on scale-up and
a consolidation check before scale-down. Where its utilisations are tighter than the policy's own
sizing, the shield *is* the policy: with the defaults before this benchmark (floor 0.85,
consolidation 0.75 of the SLO capacity over the last 4 intervals) the shipped 8B checkpoint
cost the same on the m-large test day whether its target utilisation was held at 0.90 or 0.95
(397 $ both, the consolidation check firing in most intervals), 7 % above the tuned rule.

For each candidate `ShieldConfig` and each profile with a shipped checkpoint, this runs the
checkpoint (its default knob) shielded by the candidate, and the tuned rule unshielded (the
baseline, as in every evaluation), on the validation windows of `training/*.yaml` (the first half
of day 10 of m-large and m-mid, never trained on, not the test days) as recorded and with every
prompt x4 and x10 (the long-prompt shift the shield exists for; TTFT SLO 2 s throughout), 5 seeds,
the evaluator's scaling. A cell whose SLO no policy can reach is skipped and named (70B at x10:
3 % of its requests miss a 2 s TTFT on an idle replica).

The first choice rule (never catastrophic against the tuned rule, then the cheapest) picked
floor 0.95 / consolidation 0.9 with a 60-s lookback, which took the 70B checkpoint 11 points
below the tuned rule on a held-out window with cold starts x2 (`benchmarks/results/shield_loose/`),
and on Azure code the tuned rule holds only 57-69 %, so "not 0.5 points below tuned" binds
nothing there. The second rule took only candidates with the cold-start lookback; its choice
(0.9 / 0.85 / cold start, `benchmarks/results/shield_v5_loose/`) cut the 8B checkpoint's cost on
the test windows by 5-7 % but on held-out cells took 70B Azure conv 1.3 (rate x2 step) and 2.4
(cold start x2) points below the tuned rule; the cold-start lookback alone cost 0-4 % more and
did not lift the cell it was meant for, so the shipped default kept 0.85 / 0.75 / 60 s.

Choice (2026-12-04, fourth session): among the candidates with the shipped default's lookback
(`ShieldConfig().lookback_s`, 60 s) whose SLO attainment is, on every cell, at least the tuned
rule's - 0.5 points (issue 13's bar) and at least the previous default's (CANDIDATES[0]) - 0.5
points (a loosening may not give up the safety already vetted), the cheapest by mean cost /
tuned's over every (profile, window) cell. The test windows are not run here. The validation
cells have not revealed what the held-out ones do; a candidate this benchmark picks is a
proposal, to be checked on the held-out matrix (`benchmarks/train_eval.py --shield`) before it
becomes a default.

    python benchmarks/shield_calibration.py [--seeds 5] [--profile P ...]

Writes benchmarks/results/shield_calibration.json (+ .md; the earlier 2026-12-04 run is in
benchmarks/results/shield_v5_loose/) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this worktree's rlscale, run from anywhere
DATA = ROOT.parent / "shared" / "data"
PROFILES = ("llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100")
# (trace window, prompt factor, cold-start factor): training/*.yaml's validation windows, the
# long-prompt shift, and the bursty shapes the ServeGen totals lack: Azure's code trace (1 h of
# 15-s bins, in no training or test set; the test has Azure's conv trace) as recorded and with
# every cold start x2, and the m-large validation half day with cold start x2
WINDOWS = (
    ("servegen_language_m-large_total_10min.csv@10:10.5", 1.0, 1.0),
    ("servegen_language_m-mid_total_10min.csv@10:10.5", 1.0, 1.0),
    ("servegen_language_m-large_total_10min.csv@10:10.5", 4.0, 1.0),
    ("servegen_language_m-large_total_10min.csv@10:10.5", 10.0, 1.0),
    ("servegen_language_m-large_total_10min.csv@10:10.5", 1.0, 2.0),
    ("azure_llm_2023_code.csv", 1.0, 1.0),
    ("azure_llm_2023_code.csv", 1.0, 2.0),
)
# (floor_utilisation, consolidation_utilisation, lookback_s; None: the profile's mean cold
# start); the first is the default before the cold-start lookback
CANDIDATES = (
    (0.85, 0.75, 60.0),
    (0.85, 0.75, None),
    (0.90, 0.85, 60.0),
    (0.90, 0.85, None),
    (0.95, 0.90, 60.0),
    (0.95, 0.90, None),
    (1.00, 0.95, None),
    # the floor kept, the consolidation check loosened alone (2026-12-04, fourth session): the
    # held-out misses of the looser candidates were late scale-ups, which the floor sets
    (0.85, 0.80, 60.0),
    (0.85, 0.85, 60.0),
)
SLO_MARGIN_PTS = 0.5  # never catastrophic: at most this far below the tuned rule's SLO, any cell


def _mean_run(ro: Any, days: float) -> dict[str, float]:
    from rlscale.serving.shield import FIRING_COLUMNS

    runs = [s.as_dict() for s in ro.summaries]
    keys = ("slo_attainment", "cost_usd", "scale_events", "cold_starts", *FIRING_COLUMNS)
    mean = {k: sum(float(r[k]) for r in runs) / len(runs) for k in keys}
    return mean | {
        "scale_events_per_day": mean["scale_events"] / days,
        "cold_starts_per_day": mean["cold_starts"] / days,
    }


def cell(
    window: str, factor: float, cold: float, profile: str, seeds: tuple[int, ...]
) -> list[dict]:
    """Tuned (unshielded) and the checkpoint under every candidate on one validation window,
    with prompts x `factor` and cold starts x `cold` (the shield reads the slower cold start
    from the profile, as it would from a profile fitted to the cluster's pods)."""
    from rlscale.evaluation.evaluate import EvalSettings, load_source, scale_for_profile
    from rlscale.evaluation.rollout import rollout
    from rlscale.policies.registry import default_limits, make_policy
    from rlscale.profiles.coldstart import with_cold_start_scale
    from rlscale.profiles.model import load_profile
    from rlscale.serving.shield import ShieldConfig

    prof = with_cold_start_scale(load_profile(profile), cold)
    st = EvalSettings(seeds=seeds)
    raw = load_source(str(DATA / window), st.config.interval_s)
    if factor != 1.0:
        raw = raw.with_(
            name=f"{raw.name}-prompts-x{factor:g}", prompt_tokens=raw.prompt_tokens * factor
        )
    w, info = scale_for_profile(raw, prof, st)
    limits = default_limits(st.min_replicas, st.max_replicas, prof.gpus_per_replica)
    ckpt = ROOT / "checkpoints" / f"ppo-{profile}"
    runs: list[tuple[str, str, ShieldConfig | None]] = [("tuned", "tuned", None)]
    for fl, co, lb in CANDIDATES:
        cfg = ShieldConfig(floor_utilisation=fl, consolidation_utilisation=co, lookback_s=lb)
        runs.append((_label(fl, co, lb), f"ppo:{ckpt}", cfg))
    rows = []
    for label, spec, shield in runs:
        f = make_policy(
            spec,
            profile=prof,
            workload=w,
            limits=limits,
            config=st.config,
            slo_target=st.slo_target,
            initial_replicas=info["opening_replicas"],
        )
        start = int(
            min(max(info["opening_replicas"], f.limits.min_replicas), f.limits.max_replicas)
        )
        ro = rollout(
            f,
            prof,
            w,
            seeds=seeds,
            limits=f.limits,
            config=st.config,
            initial_replicas=start,
            shield=shield,
        )
        rows.append(
            {
                "profile": profile,
                "window": window,
                "prompt_factor": factor,
                "cold_start_factor": cold,
                "policy": label,
                "shield": shield.model_dump() if shield else None,
                **_mean_run(ro, info["duration_h"] / 24.0),
            }
        )
    base = rows[0]
    for r in rows:
        r["cost_vs_tuned"] = r["cost_usd"] / base["cost_usd"]
        r["slo_vs_tuned_pts"] = 100.0 * (r["slo_attainment"] - base["slo_attainment"])
    return rows


def choose(rows: list[dict]) -> dict[str, Any]:
    """Per candidate: mean cost / tuned, worst SLO gap to tuned and to the previous default; and
    the choice (module doc)."""
    from rlscale.serving.shield import ShieldConfig

    by: dict[str, list[dict]] = {}
    for r in rows:
        if r["policy"] != "tuned":
            by.setdefault(r["policy"], []).append(r)
    ref = by[_label(*CANDIDATES[0])]
    summary = {
        name: {
            "mean_cost_vs_tuned": sum(r["cost_vs_tuned"] for r in rs) / len(rs),
            "worst_slo_vs_tuned_pts": min(r["slo_vs_tuned_pts"] for r in rs),
            "worst_slo_vs_previous_pts": min(
                100.0 * (r["slo_attainment"] - q["slo_attainment"])
                for r, q in zip(rs, ref, strict=True)
            ),
            "shield": rs[0]["shield"],
        }
        for name, rs in by.items()
    }
    lookback = ShieldConfig().lookback_s
    ok = {
        n: s
        for n, s in summary.items()
        if s["shield"]["lookback_s"] == lookback
        and s["worst_slo_vs_tuned_pts"] >= -SLO_MARGIN_PTS
        and s["worst_slo_vs_previous_pts"] >= -SLO_MARGIN_PTS
    }
    chosen = min(ok, key=lambda n: ok[n]["mean_cost_vs_tuned"]) if ok else None
    return {"candidates": summary, "chosen": chosen}


def _label(floor: float, consolidation: float, lookback_s: float | None) -> str:
    look = "cold start" if lookback_s is None else f"{lookback_s:g} s"
    return f"ppo+shield({floor:g}/{consolidation:g}/{look})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--profile", action="append", default=None)
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "shield_calibration.json")
    )
    a = ap.parse_args()
    from rlscale.errors import InputError

    seeds = tuple(range(a.seeds))
    t0 = time.perf_counter()
    rows: list[dict] = []
    skipped: list[str] = []
    for profile in a.profile or PROFILES:
        for window, factor, cold in WINDOWS:
            try:
                rows += cell(window, factor, cold, profile, seeds)
            except InputError as e:  # an SLO no policy can reach on this profile (70B at x10)
                skipped.append(str(e))
                print(f"skipped: {e}", flush=True)
                continue
            print(
                f"{profile} {window} prompts x{factor:g} cold start x{cold:g}: "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    pick = choose(rows)
    out = {
        "seeds": a.seeds,
        "elapsed_s": time.perf_counter() - t0,
        "rows": rows,
        "skipped": skipped,
        **pick,
    }
    Path(a.out).write_text(json.dumps(out, indent=1))
    md = [
        "| profile | window | prompts | cold start | policy | cost $ | SLO % | cost/tuned | SLO - tuned (pts) | scale events/day | consolidation | floor |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['profile']} | {r['window']} | x{r['prompt_factor']:g} | "
            f"x{r['cold_start_factor']:g} | {r['policy']} | "
            f"{r['cost_usd']:.1f} | {100 * r['slo_attainment']:.2f} | {r['cost_vs_tuned']:.3f} | "
            f"{r['slo_vs_tuned_pts']:+.2f} | {r['scale_events_per_day']:.0f} | "
            f"{r['shield_consolidation']:.0f} | {r['shield_floor']:.0f} |"
        )
    md += [
        "",
        "| candidate | mean cost/tuned | worst SLO - tuned (pts) | worst SLO - previous (pts) |",
        "|---|---:|---:|---:|",
    ]
    for name, s in pick["candidates"].items():
        md.append(
            f"| {name} | {s['mean_cost_vs_tuned']:.3f} | {s['worst_slo_vs_tuned_pts']:+.2f} | "
            f"{s['worst_slo_vs_previous_pts']:+.2f} |"
        )
    md += ["", f"chosen: {pick['chosen']}"] + [f"skipped: {m}" for m in skipped]
    Path(a.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
