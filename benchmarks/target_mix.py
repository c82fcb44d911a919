"""`target:U` across request mixes: the constant-utilisation rule on the test windows at the
reference mix and with every prompt x4 and x10, beside the tuned rule.

    PYTHONPATH=. python benchmarks/target_mix.py [--profile P ...] [--seeds 5] [--scale K ...]
        [--tag NAME]

Run it once with the code before a change (e.g. `PYTHONPATH=../main`) and once after, each with
its own `--tag`, to compare them side by side: the script reads only `rlscale.evaluation`.

Per (profile, window, prompt scale): `target:U` as shipped at each U of the dial (cost, SLO
attainment), the cost of its frontier at 99 % SLO attainment (`frontier.cost_at`: interpolated,
never extrapolated), and the tuned rule's. Writes benchmarks/results/target_mix[_<tag>].json/.md.
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
# the test windows of benchmarks/train_eval.py and benchmarks/best_rule.py
TEST_WINDOWS = [
    f"{DATA}/servegen_language_m-large_total_10min.csv@11:11.5",
    f"{DATA}/servegen_language_m-mid_total_10min.csv@11:11.5",
    f"{DATA}/azure_llm_2023_conv.csv",
    f"{DATA}/servegen_reason_deepseek-r1_total_10min.csv@0.25:0.75",
]
U_DIAL = (0.5, 0.6, 0.7, 0.8, 0.9)
AT_SLO = 0.99


def _with_prompt_scale(load: Any, factor: float) -> Any:
    def scaled(arg: str, interval_s: float, synthetic_seed: int = 0) -> Any:
        w = load(arg, interval_s, synthetic_seed)
        if factor == 1.0:
            return w
        return w.with_(prompt_tokens=w.prompt_tokens * factor, name=f"{w.name}~prompts×{factor:g}")

    return scaled


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="append")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--scale", type=float, action="append", help="prompt scales (default 1 4 10)")
    ap.add_argument("--trace", action="append", help="default: the four test windows")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    from rlscale.evaluation import evaluate
    from rlscale.evaluation.evaluate import EvalSettings, resolve_profile, run_evaluation
    from rlscale.evaluation.frontier import cost_at

    load = evaluate.load_source
    specs = ["tuned", *(f"target:{u:g}" for u in U_DIAL)]
    settings = EvalSettings(seeds=tuple(range(args.seeds)), baseline="tuned")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for pname in args.profile or ["llama-3.1-8b-h100"]:
        prof = resolve_profile(pname)
        for k in args.scale or [1.0, 4.0, 10.0]:
            evaluate.load_source = _with_prompt_scale(load, k)
            res = run_evaluation(specs, args.trace or TEST_WINDOWS, [prof], settings)
            by: dict[str, dict[str, Any]] = {}
            for r in res.aggregates():
                by.setdefault(r["workload"], {})[r["spec"]] = r
            for workload, recs in by.items():
                pts = [
                    (recs[s]["slo_attainment"], recs[s]["cost_usd"]) for s in specs[1:] if s in recs
                ]
                tuned = recs["tuned"]
                rows.append(
                    {
                        "profile": pname,
                        "workload": workload,
                        "prompt_scale": k,
                        "tuned": [tuned["cost_usd"], tuned["slo_attainment"]],
                        "target": {
                            s: [recs[s]["cost_usd"], recs[s]["slo_attainment"]] for s in specs[1:]
                        },
                        "target_cost_at_99": cost_at(pts, AT_SLO),
                        "tuned_cost_at_99": cost_at(
                            [(tuned["slo_attainment"], tuned["cost_usd"])], AT_SLO
                        ),
                    }
                )
            print(f"{pname} x{k:g}: {time.perf_counter() - t0:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / ("target_mix" + (f"_{args.tag}" if args.tag else ""))
    data = {"seeds": args.seeds, "elapsed_s": time.perf_counter() - t0, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(_jsonable(data), indent=1))
    stem.with_suffix(".md").write_text("\n".join(md(rows)) + "\n")
    print("\n".join(md(rows)))


def md(rows: list[dict[str, Any]]) -> list[str]:
    us = list(rows[0]["target"]) if rows else []
    lines = [
        "| profile | workload | prompts | tuned $ / SLO % | "
        + " | ".join(f"{s} $ / SLO %" for s in us)
        + " | target:U $ at 99 % |",
        "|---|---|---:|---|" + "---|" * len(us) + "---:|",
    ]
    for r in rows:
        cells = [f"{c:.1f} / {100 * a:.2f}" for c, a in r["target"].values()]
        at = r["target_cost_at_99"]
        lines.append(
            f"| {r['profile']} | {r['workload'].split('~')[0]} | x{r['prompt_scale']:g} | "
            f"{r['tuned'][0]:.1f} / {100 * r['tuned'][1]:.2f} | "
            + " | ".join(cells)
            + f" | {'outside' if not math.isfinite(at) else format(at, '.1f')} |"
        )
    return lines


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    main()
