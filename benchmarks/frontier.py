"""PPO against the rules and the oracle at equal SLO attainment (issue 13, item 7).

Each method's own dial swept on the test windows, 5 seeds, the evaluator's scaling and harness
(`rlscale evaluate --frontier`, `rlscale.evaluation.frontier`):

- PPO: the shipped checkpoint's cost/SLO knob `slo_weight` over its trained range (2-100);
- the target-utilisation rule `target:U` over U;
- the tuned HPA with its manifest's metric targets scaled (`tuned#target_scale=F`), and the
  tuned rule as shipped (the baseline, one point);
- the oracle over its SLO target (`oracle#slo_target=S`), the workload's scaling held fixed.

Every frontier is read at the tuned rule's SLO attainment on each workload (and at 99 % and
98 %): cost per family, PPO / best rule, PPO / oracle, and gap closed where the best rule costs
>= 5 % more than the oracle.

    PYTHONPATH=. python benchmarks/frontier.py [--profile llama-3.1-8b-h100] [--seeds 5] [--trace T ...]

Writes benchmarks/results/frontier.json, frontier.md and frontier.png and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "../shared/data"
TRACES = [
    f"{DATA}/servegen_language_m-large_total_10min.csv@11:11.5",
    f"{DATA}/azure_llm_2023_conv.csv",
]
CHECKPOINTS = {
    "llama-3.1-8b-h100": "checkpoints/ppo-llama-3.1-8b-h100",
    "llama-3.1-70b-fp8-4xh100": "checkpoints/ppo-llama-3.1-70b-fp8-4xh100",
}
SLO_WEIGHTS = "{2,3,5,7,10,15,20,30,50,100}"
TARGET_U = "{0.5..0.9:0.025}"
TARGET_SCALE = "{0.4..1.6:0.1}"
AT_SLO = (0.99, 0.98)
ORACLE_SLO = "{0.95,0.97,0.98,0.985,0.99,0.993,0.995,0.997,0.999}"


def families(checkpoint: str) -> list[str]:
    return [
        f"ppo=ppo:{checkpoint}#slo_weight={SLO_WEIGHTS}",
        f"target=target:{TARGET_U}",
        f"tuned-scaled=tuned#target_scale={TARGET_SCALE}",
        f"oracle-swept=oracle#slo_target={ORACLE_SLO}",
    ]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _num(x: float | None, std: float | None = None, fmt: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "outside"
    return format(x, fmt) + (f" ±{format(std, fmt)}" if std else "")


def summary_rows(rep) -> list[dict]:
    """One line per workload: the SLO point, the best rule, PPO against it and the oracle."""
    out = []
    for (_, workload), rows in rep.groups().items():
        by = {r["policy"]: r for r in rows}
        ppo, tuned = by["ppo"], by["tuned"]
        out.append(
            {
                "workload": workload,
                "slo_point": ppo["slo_point"],
                "best_rule": ppo["best_rule"],
                "best_oracle": ppo["best_oracle"],
                "tuned_cost": tuned["cost@slo"],
                "best_rule_cost": by["best_rule"]["cost@slo"],
                "oracle_cost": by["best_oracle"]["cost@slo"],
                **{k: ppo[k] for k in ppo if k.startswith(("cost@slo", "gap_closed@slo"))},
                "ppo_vs_tuned": None
                if ppo["cost@slo"] is None or tuned["cost@slo"] is None
                else ppo["cost@slo"] / tuned["cost@slo"],
            }
        )
    return out


def md_table(title: str, rows: list[dict]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| workload | SLO point % | best rule | best rule $ | oracle $ | PPO $ | PPO / best rule | PPO / oracle | gap closed | PPO / tuned |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {_pct(r['slo_point'])} | {r['best_rule'] or '-'} | "
            f"{_num(r['best_rule_cost'], fmt='.1f')} | {_num(r['oracle_cost'], fmt='.1f')} | "
            f"{_num(r['cost@slo'], r['cost@slo_std'], '.1f')} | "
            f"{_num(r['cost@slo_vs_best_rule'], r['cost@slo_vs_best_rule_std'])} | "
            f"{_num(r['cost@slo_vs_oracle'], r['cost@slo_vs_oracle_std'])} | "
            f"{_num(r['gap_closed@slo'], r['gap_closed@slo_std'], '.2f')} | "
            f"{_num(r['ppo_vs_tuned'])} |"
        )
    return [*lines, ""]


def churn_table(rep, min_slo: float = 0.97) -> list[str]:
    """Every frontier point at >= `min_slo`: what each one buys its cost with (issue 13 item 3)."""
    lines = [
        f"### Frontier points at >= {100 * min_slo:g} % SLO: cost and churn",
        "",
        "| workload | family | spec | SLO % | cost $ | scale events / day | cold starts / day |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for p in rep.points:
        if p["on_frontier"] and p["slo_attainment"] >= min_slo:
            lines.append(
                f"| {p['workload']} | {p['family']} | `{p['spec']}` | {_pct(p['slo_attainment'])} | "
                f"{p['cost_usd']:.1f} | {p['scale_events_per_day']:.0f} | "
                f"{p['cold_starts_per_day']:.0f} |"
            )
    return [*lines, ""]


def plot(rep, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = {}
    for p in rep.points:
        groups.setdefault(p["workload"], []).append(p)
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 5.5), squeeze=False)
    for ax, (workload, pts) in zip(axes[0], groups.items(), strict=True):
        for i, fam in enumerate(dict.fromkeys(p["family"] for p in pts)):
            mine = [p for p in pts if p["family"] == fam and math.isfinite(p["cost_usd"])]
            xs = [100 * p["slo_attainment"] for p in mine]
            ys = [p["cost_usd"] for p in mine]
            one = len(mine) == 1  # a policy as shipped: a star on top of the curves
            ax.scatter(
                xs, ys, s=130 if one else 22, marker="*" if one else "o", color=f"C{i}",
                label=fam, zorder=5 if one else 2, edgecolors="k" if one else "none",
            )  # fmt: skip
            front = sorted((x, y) for x, y, p in zip(xs, ys, mine, strict=True) if p["on_frontier"])
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), color=f"C{i}", lw=1.2)
        ax.axvline(100 * pts[0]["slo_point"], color="red", ls="--", lw=1, label="tuned's SLO")
        ax.set_xlim(max(90.0, min(100 * p["slo_attainment"] for p in pts) - 0.2), 100.2)
        ax.set_xlabel("SLO attainment (%)")
        ax.set_ylabel("cost ($)")
        ax.set_title(workload, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="llama-3.1-8b-h100")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trace", action="append")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    from rlscale.evaluation.evaluate import EvalSettings, resolve_profile, run_evaluation
    from rlscale.evaluation.frontier import Frontier, score_frontiers
    from rlscale.evaluation.report import frontier_json

    traces = args.trace or TRACES
    prof = resolve_profile(args.profile)
    fams = [Frontier.parse(t) for t in families(CHECKPOINTS[prof.name])]
    settings = EvalSettings(seeds=tuple(range(args.seeds)))
    t0 = time.perf_counter()
    res = run_evaluation(["tuned"], traces, [prof], settings, frontiers=fams)
    at_tuned = res.frontier
    assert at_tuned is not None
    fixed = {s: score_frontiers(res.records, fams, baseline="tuned", at_slo=s) for s in AT_SLO}
    elapsed = time.perf_counter() - t0
    s_tuned = summary_rows(at_tuned)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "profile": prof.name,
        "seeds": args.seeds,
        "traces": traces,
        "families": [f.template for f in fams],
        "elapsed_s": elapsed,
        "summary_at_tuned_slo": s_tuned,
        **{f"summary_at_{100 * s:g}": summary_rows(rep) for s, rep in fixed.items()},
        "at_tuned_slo": frontier_json(at_tuned),
        **{f"at_{100 * s:g}": frontier_json(rep) for s, rep in fixed.items()},
    }
    (out / "frontier.json").write_text(json.dumps(_jsonable(data), indent=1))
    md = [
        f"# Cost at equal SLO attainment: {prof.name}, {args.seeds} seeds",
        "",
        "`python benchmarks/frontier.py` (issue 13 item 7). Families: "
        + ", ".join(f"`{f.template}`" for f in fams)
        + ", and `tuned` as shipped. Each family's seed-averaged (SLO, cost) points reduced to "
        "their Pareto frontier and interpolated linearly (never extrapolated: 'outside'); best "
        "rule = the cheapest of tuned, tuned-scaled and target at that SLO; gap closed = (best "
        "rule - PPO) / (best rule - oracle) where that gap is >= 5 % of the oracle's cost. "
        "± = standard deviation over the seeds' own frontiers. PPO / tuned: against the tuned "
        "rule as shipped, a single point, so only at its own SLO.",
        "",
        *md_table("At the tuned rule's SLO attainment (per workload)", s_tuned),
        *(
            line
            for s, rep in fixed.items()
            for line in md_table(f"At {100 * s:g} % SLO attainment", summary_rows(rep))
        ),
        *churn_table(at_tuned),
        f"Evaluated in {elapsed:.0f} s. Plot: frontier.png.",
        "",
    ]
    (out / "frontier.md").write_text("\n".join(md))
    plot(at_tuned, out / "frontier.png")
    print("\n".join(md))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    main()
