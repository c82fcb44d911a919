"""What the run-time shield (`rlscale.serving.shield`) gives the shipped PPO checkpoints on traffic
whose requests are ten times the work they were trained on, and what it costs on the traffic
they were trained for. Evidence for issue 13, item 4.

For each profile with a shipped checkpoint and each shared Azure trace, as recorded (prompts x1)
and with every prompt x10 (`Workload.with_`, the size transform; the evaluator then rescales the
rate so the peak needs the same fleet within the SLO), 5 seeds, the evaluator's scaling and
harness: PPO unshielded, PPO shielded (the default `ShieldConfig`), the tuned rule (the
baseline, unshielded) and the tuned rule shielded. TTFT SLO 10 s on the x10 traffic (as the
issue's production trace: at 2 s a 12k-token prompt misses it on an idle replica), 2 s on x1.

    python benchmarks/shield.py [--seeds 5] [--engine fluid|requests] [--profile P ...]
        [--factor K ...] [--trace NAME[@WINDOW] ...] [--ttft-slo-s S]

`--trace` replaces the two Azure traces (a file in ../shared/data, with an optional window, e.g.
`servegen_language_m-large_total_10min.csv@11:11.5`, the m-large test day); `--ttft-slo-s` holds
the TTFT SLO at S at every factor (as `benchmarks/train_eval.py --prompt-scale` does at 2 s).

Writes benchmarks/results/shield.json and prints a table (SLO attainment, cost, scale events,
shield firings by kind).
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
TRACES = ("azure_llm_2023_conv.csv", "azure_llm_2023_code.csv")
PROFILES = ("llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100")
PROMPT_FACTORS = (1.0, 10.0)
TTFT_SLO_S = {1.0: 2.0, 10.0: 10.0}


def cell(
    trace: str,
    profile: str,
    factor: float,
    seeds: tuple[int, ...],
    engine: str,
    ttft_slo_s: float | None = None,
) -> dict:
    from rlscale.evaluation.evaluate import EvalSettings, load_source, scale_for_profile
    from rlscale.evaluation.rollout import rollout
    from rlscale.policies.registry import default_limits, make_policy
    from rlscale.profiles.model import load_profile
    from rlscale.serving.model import SimConfig
    from rlscale.serving.shield import FIRING_COLUMNS, ShieldConfig

    prof = load_profile(profile)
    cfg = SimConfig(ttft_slo_s=TTFT_SLO_S.get(factor, 2.0) if ttft_slo_s is None else ttft_slo_s)
    st = EvalSettings(seeds=seeds, config=cfg, engine=engine)
    raw = load_source(str(DATA / trace), cfg.interval_s)
    if factor != 1.0:
        raw = raw.with_(
            name=f"{raw.name}-prompts-x{factor:g}", prompt_tokens=raw.prompt_tokens * factor
        )
    w, info = scale_for_profile(raw, prof, st)
    limits = default_limits(st.min_replicas, st.max_replicas, prof.gpus_per_replica)
    ckpt = ROOT / "checkpoints" / f"ppo-{profile}"
    rows = []
    for spec, shield in (
        (f"ppo:{ckpt}", None),
        (f"ppo:{ckpt}", ShieldConfig()),
        ("tuned", None),
        ("tuned", ShieldConfig()),
    ):
        f = make_policy(
            spec,
            profile=prof,
            workload=w,
            limits=limits,
            config=cfg,
            slo_target=st.slo_target,
            initial_replicas=info["opening_replicas"],
        )
        start = int(
            min(max(info["opening_replicas"], f.limits.min_replicas), f.limits.max_replicas)
        )
        t0 = time.perf_counter()
        ro = rollout(
            f,
            prof,
            w,
            seeds=seeds,
            limits=f.limits,
            config=cfg,
            initial_replicas=start,
            engine=engine,
            shield=shield,
        )
        runs = [s.as_dict() for s in ro.summaries]
        n = len(runs)
        mean = {
            k: sum(float(r[k]) for r in runs) / n
            for k in ("slo_attainment", "cost_usd", "gpu_hours", "scale_events", "cold_starts")
            + FIRING_COLUMNS
        }
        rows.append(
            {
                "policy": ("ppo" if spec.startswith("ppo") else spec)
                + ("+shield" if shield else ""),
                "spec": spec,
                "shield": shield.model_dump() if shield else None,
                "seconds": time.perf_counter() - t0,
                **mean,
                "slo_attainment_per_seed": [r["slo_attainment"] for r in runs],
                "cost_usd_per_seed": [r["cost_usd"] for r in runs],
            }
        )
    return {
        "trace": trace,
        "profile": profile,
        "prompt_factor": factor,
        "ttft_slo_s": cfg.ttft_slo_s,
        "workload": {k: v for k, v in info.items() if isinstance(v, int | float | str)},
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--engine", default="fluid")
    ap.add_argument("--profile", action="append", default=None)
    ap.add_argument("--factor", action="append", type=float, default=None)
    ap.add_argument("--trace", action="append", default=None)
    ap.add_argument("--ttft-slo-s", type=float, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shield.json"))
    a = ap.parse_args()
    seeds = tuple(range(a.seeds))
    cells = []
    t0 = time.perf_counter()
    for profile in a.profile or PROFILES:
        for factor in a.factor or PROMPT_FACTORS:
            for trace in a.trace or TRACES:
                c = cell(trace, profile, factor, seeds, a.engine, a.ttft_slo_s)
                cells.append(c)
                print(
                    f"\n{profile} / {trace} / prompts x{factor:g} (TTFT SLO {c['ttft_slo_s']:g} s)"
                )
                print(
                    f"{'policy':14s} {'SLO %':>7s} {'cost $':>8s} {'scale ev':>8s} "
                    f"{'floor':>6s} {'queue':>6s} {'consol':>6s} {'handov':>6s}"
                )
                for r in c["rows"]:
                    print(
                        f"{r['policy']:14s} {100 * r['slo_attainment']:7.2f} {r['cost_usd']:8.1f} "
                        f"{r['scale_events']:8.0f} {r['shield_floor']:6.0f} {r['shield_queue']:6.0f} "
                        f"{r['shield_consolidation']:6.0f} {r['shield_handover']:6.0f}"
                    )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "seeds": list(seeds),
        "engine": a.engine,
        "elapsed_s": time.perf_counter() - t0,
        "cells": cells,
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print(f"\nwrote {out} in {result['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
