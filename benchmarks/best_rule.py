"""The best rule as the baseline (issue 13, item 6): the re-tuned rule against the previous tuned
manifests, an HPA on request rate per pod, the shipped PPO checkpoints and the oracle, on the test
windows (never tuned, trained or selected on), point by point and at equal SLO attainment.

    PYTHONPATH=. python benchmarks/best_rule.py [--profile P ...] [--seeds 5] [--engine fluid]
        [--trace T ...] [--dials full|short] [--tag NAME]

Policies, per profile:

- `tuned`: the shipped manifest (`rlscale tune`, issue 13's search space), the baseline;
- `tuned-v1`: the previous tuned manifest (queue per pod and KV cache only),
  `benchmarks/manifests/tuned-v1-<profile>.yaml`;
- `rate-hpa`: an HPA on request rate per pod, issue 13's evidence (0.72 of a replica's capacity:
  17 req/s on the 8B pod), `benchmarks/manifests/hpa-request-rate-<profile>.yaml`;
- `capacity`: the run-time shield's rule with no policy behind it (`rlscale.policies.capacity`),
  the rule every shielded PPO checkpoint runs above, under the checkpoint's scale-up window;
- `ppo`: the shipped checkpoint `checkpoints/ppo-<profile>` at its default knob;
- `oracle`: the clairvoyant plan.

Each family is also swept along its own dial (`rlscale evaluate --frontier`): the three rules'
metric targets x `target_scale`, the constant-utilisation rule `target:U` over U (the best rule
at equal SLO before this issue, README), the capacity rule's consolidation utilisation (its
floor held at 0.85), PPO's knob (`slo_target` on a checkpoint trained with the
SLO-target knob, else `slo_weight`), the oracle's `slo_target`; the frontiers are
read at 99 % SLO attainment and at the tuned rule's own (`rlscale.evaluation.frontier`: linear
interpolation, never extrapolation; gap closed only where best rule - oracle >= 5 %).
`--dials short` sweeps fewer points (for the request-level engine, which is ~100x slower).

Writes benchmarks/results/best_rule[_<engine>][_<tag>].json and .md and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = "../shared/data"
# the test windows of benchmarks/train_eval.py (training/README.md's split)
TEST_WINDOWS = [
    f"{DATA}/servegen_language_m-large_total_10min.csv@11:11.5",
    f"{DATA}/servegen_language_m-mid_total_10min.csv@11:11.5",
    f"{DATA}/azure_llm_2023_conv.csv",
    f"{DATA}/servegen_reason_deepseek-r1_total_10min.csv@0.25:0.75",
]
PROFILES = ("llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100")
DIALS = {
    "full": {
        "scale": "{0.4..1.6:0.1}",
        "target": "{0.5..0.9:0.025}",
        "slo_weight": "{2,3,5,7,10,15,20,30,50,100}",
        "ppo_target": "{0.95,0.97,0.98,0.985,0.99,0.993,0.995,0.997,0.998,0.999}",
        "oracle": "{0.95,0.97,0.98,0.985,0.99,0.993,0.995,0.997,0.999}",
        "capacity": "{0.55..0.85:0.05}",
    },
    "short": {
        "scale": "{0.6,0.8,1.0,1.2,1.4}",
        "target": "{0.6,0.7,0.8,0.9}",
        "slo_weight": "{5,10,20,50,100}",
        "ppo_target": "{0.95,0.99,0.995,0.999}",
        "oracle": "{0.98,0.99,0.995,0.999}",
        "capacity": "{0.65,0.75,0.85}",
    },
}
AT_SLO = 0.99
NAMES = ("tuned", "tuned-v1", "rate-hpa", "capacity", "ppo", "oracle")


def specs(profile: str) -> dict[str, str]:
    """Each policy as shipped, by its short name."""
    return {
        "tuned": "tuned",
        "tuned-v1": f"hpa:benchmarks/manifests/tuned-v1-{profile}.yaml",
        "rate-hpa": f"hpa:benchmarks/manifests/hpa-request-rate-{profile}.yaml",
        "capacity": _capacity(profile),
        "ppo": f"ppo:checkpoints/ppo-{profile}",
        "oracle": "oracle",
    }


def families(profile: str, dials: dict[str, str]) -> list[str]:
    s = specs(profile)
    return [
        f"tuned-swept=tuned#target_scale={dials['scale']}",
        f"tuned-v1-swept={s['tuned-v1']}#target_scale={dials['scale']}",
        f"rate-hpa-swept={s['rate-hpa']}#target_scale={dials['scale']}",
        f"target-swept=target:{dials['target']}",
        f"capacity-swept={_with_option(s['capacity'], 'consolidation_utilisation=' + dials['capacity'])}",
        f"ppo-swept={s['ppo']}#{_ppo_dial(s['ppo'], dials)}",
        f"oracle-swept=oracle#slo_target={dials['oracle']}",
    ]


def _capacity(profile: str) -> str:
    """The capacity rule under the checkpoint's clamps: its scale-up window too (the 8B one's 30 s),
    so the two differ only in what the network proposes above the shield."""
    manifest = json.loads((ROOT / "checkpoints" / f"ppo-{profile}" / "manifest.json").read_text())
    window_s = float(manifest["safety_limits"]["scale_up"]["stabilization_window_s"])
    return f"capacity#scale_up_window_s={window_s:g}" if window_s else "capacity"


def _with_option(spec: str, option: str) -> str:
    return f"{spec}{',' if '#' in spec else '#'}{option}"


def _ppo_dial(spec: str, dials: dict[str, str]) -> str:
    """The checkpoint's own knob: the SLO target where it was trained with one, else the weight."""
    manifest = json.loads((ROOT / spec.removeprefix("ppo:") / "manifest.json").read_text())
    if "slo_multipliers" in manifest:
        return f"slo_target={dials['ppo_target']}"
    return f"slo_weight={dials['slo_weight']}"


def _num(x: Any, fmt: str = ".1f", std: Any = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "outside"
    return format(x, fmt) + (f" ±{format(std, fmt)}" if std else "")


def _ratio(a: Any, b: Any) -> float | None:
    return None if a is None or b is None or not b else a / b


def point_rows(res: Any, profile: str) -> list[dict[str, Any]]:
    """Each policy as shipped: cost, SLO, scale events and cold starts per day (seed means)."""
    by_spec = {v: k for k, v in specs(profile).items()}
    out = []
    for r in res.aggregates():
        name = by_spec.get(r["spec"])
        if name is None:
            continue
        out.append(
            {
                "profile": profile,
                "workload": r["workload"],
                "policy": name,
                "spec": r["spec"],
                **{
                    k: r.get(k)
                    for k in (
                        "cost_usd",
                        "cost_usd_std",
                        "slo_attainment",
                        "slo_attainment_std",
                        "scale_events_per_day",
                        "cold_starts_per_day",
                        "cost_vs_oracle",
                    )
                },
            }
        )
    return out


def frontier_rows(rep: Any) -> list[dict[str, Any]]:
    """Per workload: each family's cost at the SLO point, PPO against the best rule and oracle."""
    out = []
    for (profile, workload), rows in rep.groups().items():
        by = {r["policy"]: r for r in rows}
        ppo = by["ppo-swept"]

        def cost(name: str, by: dict = by) -> float | None:
            return by.get(name, {}).get("cost@slo")

        out.append(
            {
                "profile": profile,
                "workload": workload,
                "slo_point": ppo["slo_point"],
                "best_rule": ppo["best_rule"],
                "best_rule_cost": cost("best_rule"),
                "oracle_cost": cost("best_oracle"),
                "tuned": cost("tuned-swept"),
                "tuned_v1": cost("tuned-v1-swept"),
                "rate_hpa": cost("rate-hpa-swept"),
                "target": cost("target-swept"),
                "capacity": cost("capacity-swept"),
                "tuned_vs_tuned_v1": _ratio(cost("tuned-swept"), cost("tuned-v1-swept")),
                "tuned_vs_rate_hpa": _ratio(cost("tuned-swept"), cost("rate-hpa-swept")),
                "best_rule_vs_oracle": _ratio(cost("best_rule"), cost("best_oracle")),
                **{k: ppo[k] for k in ppo if k.startswith(("cost@slo", "gap_closed@slo"))},
            }
        )
    return out


def _role(family: str) -> str:
    return (
        "ppo" if family.startswith("ppo") else "oracle" if family.startswith("oracle") else "rule"
    )


def read_at_point(points: list[dict[str, Any]], anchor: str) -> list[dict[str, Any]]:
    """Per workload, every frontier read at the SLO attainment of the shipped `anchor` ("ppo" or
    "oracle"), from the seed-mean points (`rlscale.evaluation.frontier.cost_at`: interpolated,
    never extrapolated): where PPO's and the oracle's frontiers are too short to reach 99 %, this
    is where they can be compared with the rules at all."""
    from rlscale.evaluation.frontier import cost_at

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["profile"], p["workload"]), []).append(p)
    out = []
    for (profile, workload), pts in groups.items():
        fams: dict[str, list[tuple[float, float]]] = {}
        for p in pts:
            a, c = p["slo_attainment"], p["cost_usd"]
            fams.setdefault(p["family"], []).append(
                (math.nan if a is None else a, math.nan if c is None else c)
            )
        shipped = specs(profile)[anchor]
        (s, own), *_ = fams[shipped]
        cost = {f: cost_at(v, s) for f, v in fams.items()}
        rules = {f: c for f, c in cost.items() if _role(f) == "rule" and math.isfinite(c)}
        oracles = [c for f, c in cost.items() if _role(f) == "oracle" and math.isfinite(c)]
        best = min(rules, key=rules.__getitem__) if rules else None
        orc = min(oracles) if oracles else None
        rule_cost = rules[best] if best else None
        out.append(
            {
                "profile": profile,
                "workload": workload,
                "anchor": anchor,
                "slo_point": s,
                "anchor_cost": own,
                "best_rule": best,
                "best_rule_cost": rule_cost,
                "oracle_cost": orc,
                "anchor_vs_best_rule": _ratio(own, rule_cost),
                "best_rule_vs_oracle": _ratio(rule_cost, orc),
                "tuned": _finite(cost.get("tuned-swept")),
                "tuned_v1": _finite(cost.get("tuned-v1-swept")),
                "rate_hpa": _finite(cost.get("rate-hpa-swept")),
                "target": _finite(cost.get("target-swept")),
                "capacity": _finite(cost.get("capacity-swept")),
            }
        )
    return out


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def md_at_point(title: str, rows: list[dict[str, Any]]) -> list[str]:
    name = rows[0]["anchor"] if rows else ""
    lines = [
        f"#### {title}",
        "",
        f"| profile | workload | SLO % | {name} $ | tuned $ | tuned-v1 $ | rate-hpa $ | target:U $ "
        f"| capacity $ | best rule | {name} / best rule | best rule / oracle |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['profile']} | {r['workload']} | {100 * r['slo_point']:.2f} | "
            f"{_num(r['anchor_cost'])} | {_num(r['tuned'])} | {_num(r['tuned_v1'])} | "
            f"{_num(r['rate_hpa'])} | {_num(r['target'])} | {_num(r['capacity'])} | "
            f"{r['best_rule'] or '-'} | {_num(r['anchor_vs_best_rule'], '.3f')} | {_num(r['best_rule_vs_oracle'], '.3f')} |"
        )
    return [*lines, ""]


def md_points(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| profile | workload | policy | cost $ | SLO % | x oracle | scale events / day | cold starts / day |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    order = {n: i for i, n in enumerate(NAMES)}
    for r in sorted(rows, key=lambda r: (r["profile"], r["workload"], order[r["policy"]])):
        lines.append(
            f"| {r['profile']} | {r['workload']} | {r['policy']} | {_num(r['cost_usd'])} | "
            f"{100 * r['slo_attainment']:.2f} | {_num(r['cost_vs_oracle'], '.3f')} | "
            f"{_num(r['scale_events_per_day'], '.0f')} | {_num(r['cold_starts_per_day'], '.0f')} |"
        )
    return lines


def md_frontier(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"#### {title}",
        "",
        "| profile | workload | SLO % | tuned $ | tuned-v1 $ | rate-hpa $ | target:U $ | capacity $ "
        "| tuned / v1 | tuned / rate-hpa | best rule | best rule / oracle | PPO $ | PPO / best rule | PPO / oracle "
        "| gap closed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['profile']} | {r['workload']} | {100 * r['slo_point']:.2f} | "
            f"{_num(r['tuned'])} | {_num(r['tuned_v1'])} | {_num(r['rate_hpa'])} | {_num(r['target'])} | "
            f"{_num(r['capacity'])} | {_num(r['tuned_vs_tuned_v1'], '.3f')} | {_num(r['tuned_vs_rate_hpa'], '.3f')} | "
            f"{r['best_rule'] or '-'} | {_num(r['best_rule_vs_oracle'], '.3f')} | "
            f"{_num(r['cost@slo'], '.1f', r['cost@slo_std'])} | "
            f"{_num(r['cost@slo_vs_best_rule'], '.3f', r['cost@slo_vs_best_rule_std'])} | "
            f"{_num(r['cost@slo_vs_oracle'], '.3f', r['cost@slo_vs_oracle_std'])} | "
            f"{_num(r['gap_closed@slo'], '.2f', r['gap_closed@slo_std'])} |"
        )
    return [*lines, ""]


def _with_prompt_scale(load: Any, factor: float) -> Any:
    """`load_source` with every bin's mean prompt size x `factor` (the workload renamed)."""

    def scaled(arg: str, interval_s: float, synthetic_seed: int = 0) -> Any:
        w = load(arg, interval_s, synthetic_seed)
        return w.with_(prompt_tokens=w.prompt_tokens * factor, name=f"{w.name}~prompts×{factor:g}")

    return scaled


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="append", choices=PROFILES)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--engine", default="fluid", choices=("fluid", "requests"))
    ap.add_argument("--trace", action="append", help="default: the four test windows")
    ap.add_argument("--dials", default="full", choices=tuple(DIALS))
    ap.add_argument(
        "--prompt-scale",
        type=float,
        default=1.0,
        help="multiply every trace's prompt sizes by K before scaling (the long-prompt shift; "
        "fluid engine only: the request-level replay reads the Azure CSV as recorded)",
    )
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument(
        "--rescore",
        metavar="JSON",
        help="re-read the frontiers of a previous result (no simulation) and rewrite its .md",
    )
    args = ap.parse_args()
    if args.rescore:
        path = Path(args.rescore)
        write(json.loads(path.read_text()), path.with_suffix(""))
        return

    from rlscale.evaluation import evaluate
    from rlscale.evaluation.evaluate import EvalSettings, resolve_profile, run_evaluation
    from rlscale.evaluation.frontier import Frontier, score_frontiers
    from rlscale.evaluation.report import frontier_json

    if args.prompt_scale != 1.0:
        if args.engine != "fluid":
            ap.error("--prompt-scale needs --engine fluid")
        evaluate.load_source = _with_prompt_scale(evaluate.load_source, args.prompt_scale)
    traces = args.trace or TEST_WINDOWS
    settings = EvalSettings(seeds=tuple(range(args.seeds)), baseline="tuned", engine=args.engine)
    points: list[dict[str, Any]] = []
    at_fixed: list[dict[str, Any]] = []
    at_tuned: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    t0 = time.perf_counter()
    for pname in args.profile or PROFILES:
        prof = resolve_profile(pname)
        fams = [Frontier.parse(t) for t in families(pname, DIALS[args.dials])]
        singles = list(specs(pname).values())
        t1 = time.perf_counter()
        res = run_evaluation(singles, traces, [prof], settings, frontiers=fams)
        fixed = score_frontiers(res.records, fams, baseline="tuned", at_slo=AT_SLO)
        own = score_frontiers(res.records, fams, baseline="tuned")
        points += point_rows(res, pname)
        at_fixed += frontier_rows(fixed)
        at_tuned += frontier_rows(own)
        raw[pname] = {
            "families": [f.template for f in fams],
            "seconds": time.perf_counter() - t1,
            f"at_{100 * AT_SLO:g}": frontier_json(fixed),
            "at_tuned_slo": frontier_json(own),
        }
        print(f"{pname}: {time.perf_counter() - t1:.0f} s", flush=True)
    suffix = ("" if args.engine == "fluid" else f"_{args.engine}") + (
        f"_{args.tag}" if args.tag else ""
    )
    command = "PYTHONPATH=. python benchmarks/best_rule.py " + " ".join(
        [f"--engine {args.engine}", f"--seeds {args.seeds}", f"--dials {args.dials}"]
        + ([f"--prompt-scale {args.prompt_scale:g}"] if args.prompt_scale != 1.0 else [])
        + [f"--profile {p}" for p in args.profile or ()]
        + [f"--trace {t}" for t in args.trace or ()]
        + ([f"--tag {args.tag}"] if args.tag else [])
    )
    data = {
        "command": command,
        "engine": args.engine,
        "prompt_scale": args.prompt_scale,
        "seeds": args.seeds,
        "traces": traces,
        "dials": DIALS[args.dials],
        "dials_name": args.dials,
        "at_slo": AT_SLO,
        "elapsed_s": time.perf_counter() - t0,
        "points": points,
        f"frontier_at_{100 * AT_SLO:g}": at_fixed,
        "frontier_at_tuned_slo": at_tuned,
        "raw": raw,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write(data, out / f"best_rule{suffix}")


def write(data: dict[str, Any], stem: Path) -> None:
    """The JSON (with the readings at PPO's and the oracle's SLO added) and the Markdown."""
    all_points = [p for r in data["raw"].values() for p in r[f"at_{100 * AT_SLO:g}"]["points"]]
    data["frontier_at_ppo_slo"] = read_at_point(all_points, "ppo")
    data["frontier_at_oracle_slo"] = read_at_point(all_points, "oracle")
    stem.with_suffix(".json").write_text(json.dumps(_jsonable(data), indent=1))
    command = data.get("command") or (
        f"PYTHONPATH=. python benchmarks/best_rule.py --engine {data['engine']} "
        f"--seeds {data['seeds']}"
    )
    md = [
        f"### Best rule: {data['engine']} engine, {data['seeds']} seeds"
        + (f", prompts x{data['prompt_scale']:g}" if data.get("prompt_scale", 1.0) != 1.0 else ""),
        "",
        f"`{command}`; dials: " + ", ".join(f"{k} {v}" for k, v in data["dials"].items()) + ".",
        "",
        "#### Each policy as shipped",
        "",
        *md_points(data["points"]),
        "",
        *md_frontier(
            f"At {100 * AT_SLO:g} % SLO attainment (frontiers)",
            data[f"frontier_at_{100 * AT_SLO:g}"],
        ),
        *md_frontier(
            "At the tuned rule's own SLO attainment (frontiers)", data["frontier_at_tuned_slo"]
        ),
        *md_at_point(
            "At the shipped PPO's SLO attainment (frontiers, seed means)",
            data["frontier_at_ppo_slo"],
        ),
        *md_at_point(
            "At the oracle's SLO attainment (frontiers, seed means)",
            data["frontier_at_oracle_slo"],
        ),
        f"Evaluated in {data['elapsed_s']:.0f} s.",
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
