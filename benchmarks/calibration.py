"""Engine calibration of the shipped profiles (issue #11 part 2): the iteration-time coefficients
fitted by simulating each measured benchmark in the request-level engine
(`rlscale.serving.benchfit`), against the closed-form fit `rlscale.profiles.fit` ships.

Points, per profile:

- **aiconfigurator**: the silicon rows `profiles.fit.measured_points` selects (below the KV knee;
  TTFT of the warm-up rows left out, as the closed-form fit does), each run as its benchmark: one
  replica, `concurrency` clients, `PROMPTS_PER_CLIENT` requests per client, lengths within
  +-`RANGE_RATIO` of the row's isl/osl (so the simulated clients do not stay in lock-step), mean
  TTFT and TPOT.
- **Vidur-derived**: the same benchmarks run with an iteration model built from Vidur's measured
  operator profiles (`perf_vidur_nonattention_summary.csv`, H100, the nearest model at the
  profile's TP) at *equal capacity*: base = Vidur's 1-token iteration, per decode sequence =
  its slope over 1..max_batch tokens, per prefill token = its slope over 1k..8k tokens, scaled by
  one factor so the steady iteration at the typical request and c = max_batch takes as long as
  the closed-form profile's (same knee); attention (KV read) and the TTFT overhead are the
  profile's, since Vidur's attention tables are not in the data.

For each: TTFT and TPOT MAPE of the closed-form coefficients and of the engine-fitted ones, and
(sensitivity) both re-simulated with 4 and 16 prompts per client.

    python benchmarks/calibration.py [--ship PROFILE ...] [--out benchmarks/results/calibration.json]

`--ship` marks profiles whose engine-fitted coefficients the YAML should carry; the compact
result goes to `rlscale/profiles/engine_fit.json`, which `rlscale profiles fit` reads (FITS.md's
engine section and, for shipped profiles, the YAML's iteration coefficients).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlscale.profiles.fit import ENGINE_FIT_FILE, default_data_dir, fit_profile, measured_points
from rlscale.profiles.model import PROFILE_DIR, LatencyModel, shipped_profiles
from rlscale.serving.benchfit import (
    BenchmarkSpec,
    MeasuredPoint,
    coefficients,
    fit_iteration_model,
    mape_pct,
    point_errors,
    simulate_points,
    with_coefficients,
)

PROMPTS_PER_CLIENT = 8
MIN_PROMPTS = 64
RANGE_RATIO = 0.1
SENSITIVITY_PROMPTS_PER_CLIENT = (4, 16)
VIDUR_FILE = "perf_vidur_nonattention_summary.csv"
# the Vidur profile nearest each shipped profile: same GPU, same layer shapes where the data have
# them (Llama-2-7B: hidden 4096 x 32 layers as Llama-3.1-8B, MLP 11008 vs 14336; Llama-2-70B:
# the Llama-3.1-70B body, bf16 where ours is FP8); the equal-capacity scale absorbs the rest
VIDUR_MODEL = {
    "llama-3.1-8b-h100": ("meta-llama/Llama-2-7b-hf", "h100", 1),
    "llama-3.1-70b-fp8-4xh100": ("meta-llama/Llama-2-70b-hf", "h100", 4),
}
RESULTS = Path(__file__).resolve().parent / "results"


def aiconfigurator_points(
    data_dir: Path, name: str, prompts_per_client: int = PROMPTS_PER_CLIENT
) -> list[MeasuredPoint]:
    pts = measured_points(data_dir, name)
    out = []
    for _, r in pts[pts["used_tpot"]].iterrows():
        c = int(r["concurrency"])
        spec = BenchmarkSpec(
            prompt_tokens=int(r["isl"]),
            output_tokens=int(r["osl"]),
            max_concurrency=c,
            num_prompts=max(prompts_per_client * c, MIN_PROMPTS),
            range_ratio=RANGE_RATIO,
            seed=int(r["row"]),
        )
        ttft = float(r["ttft_ms"]) if bool(r["used_ttft"]) else None
        label = f"row {int(r['row'])}: {int(r['isl'])}/{int(r['osl'])} c={c}"
        out.append(MeasuredPoint(spec, ttft, float(r["tpot_ms"]), "mean", label))
    return out


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0])


def vidur_latency(
    data_dir: Path, name: str, closed: LatencyModel, isl: float, osl: float
) -> dict[str, Any]:
    """The Vidur-derived iteration model at equal capacity (module docstring)."""
    model, gpu, tp = VIDUR_MODEL[name]
    v = pd.read_csv(data_dir / VIDUR_FILE)
    v = v[(v["model"] == model) & (v["gpu"] == gpu) & (v["tp"] == tp)]
    t = v.groupby("num_tokens")["nonattn_ms_per_iteration_est"].median()
    n = t.index.to_numpy(dtype=float)
    ms = t.to_numpy()
    base = float(ms[0])
    dec = n <= closed.max_batch
    per_seq = max(_slope(n[dec], ms[dec]), 0.0)
    big = (n >= 1024) & (n <= 8192)
    per_tok = _slope(n[big], ms[big])
    c = closed.max_batch
    ctx = isl + osl / 2.0
    attn = closed.tpot_ms_per_seq_per_ktok * c * ctx / 1000.0
    closed_iter = (
        closed.tpot_base_ms
        + closed.tpot_ms_per_seq * c
        + attn
        + closed.tpot_ms_per_prefill_token * c * isl / osl
    )
    vidur_iter = base + per_seq * c + per_tok * c * isl / osl
    scale = (closed_iter - attn) / vidur_iter
    coef = {
        "tpot_base_ms": scale * base,
        "tpot_ms_per_seq": scale * per_seq,
        "tpot_ms_per_seq_per_ktok": closed.tpot_ms_per_seq_per_ktok,
        "tpot_ms_per_prefill_token": scale * per_tok,
        "prefill_base_ms": closed.prefill_base_ms,
    }
    return {
        "source": f"{VIDUR_FILE}: model={model}, gpu={gpu}, tp={tp}",
        "raw_ms": {"base": base, "per_decode_seq": per_seq, "per_prefill_token": per_tok},
        "scale_to_equal_capacity": scale,
        "coef": coef,
    }


def _errors_table(
    points: list[MeasuredPoint], lat_a: LatencyModel, lat_b: LatencyModel
) -> list[dict[str, Any]]:
    ra, rb = simulate_points(lat_a, points), simulate_points(lat_b, points)
    rows = []
    for p, a, b in zip(points, ra, rb, strict=True):
        rows.append(
            {
                "label": p.label,
                "ttft_ms": p.ttft_ms,
                "ttft_closed_ms": a.ttft_ms_mean,
                "ttft_engine_ms": b.ttft_ms_mean,
                "tpot_ms": p.tpot_ms,
                "tpot_closed_ms": a.tpot_ms_mean,
                "tpot_engine_ms": b.tpot_ms_mean,
            }
        )
    return rows


def _mapes(points: list[MeasuredPoint], lat: LatencyModel) -> dict[str, float]:
    e = point_errors(lat, points)
    return {"ttft_mape_pct": mape_pct(e, "ttft"), "tpot_mape_pct": mape_pct(e, "tpot")}


def calibrate(data_dir: Path, name: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    closed = fit_profile(data_dir, name, engine_fit=False).profile
    lat0 = closed.latency
    points = aiconfigurator_points(data_dir, name)
    fit = fit_iteration_model(lat0, points)
    lat1 = fit.latency(lat0)
    sens = {}
    for k in SENSITIVITY_PROMPTS_PER_CLIENT:
        pk = aiconfigurator_points(data_dir, name, k)
        sens[str(k)] = {"closed_form": _mapes(pk, lat0), "engine_fit": _mapes(pk, lat1)}
    vid = vidur_latency(
        data_dir, name, lat0, closed.typical_prompt_tokens, closed.typical_output_tokens
    )
    lat_v = with_coefficients(lat0, vid["coef"])
    vpoints = [
        MeasuredPoint(p.spec, r.ttft_ms_mean, r.tpot_ms_mean, "mean", p.label)
        for p, r in zip(points, simulate_points(lat_v, points), strict=True)
    ]
    vid["closed_form"] = _mapes(vpoints, lat0)
    vid["engine_fit"] = _mapes(vpoints, lat1)
    return {
        "profile": name,
        "points": len(points),
        "ttft_points": sum(p.ttft_ms is not None for p in points),
        "prompts_per_client": PROMPTS_PER_CLIENT,
        "range_ratio": RANGE_RATIO,
        "closed_form": {"coef": coefficients(lat0), **_mapes(points, lat0)},
        "engine_fit": {
            "coef": fit.coef,
            "ttft_mape_pct": fit.ttft_mape_pct,
            "tpot_mape_pct": fit.tpot_mape_pct,
            "evaluations": fit.evaluations,
        },
        "sensitivity_prompts_per_client": sens,
        "vidur": vid,
        "per_point": _errors_table(points, lat0, lat1),
        "wall_s": time.perf_counter() - t0,
    }


def summary(results: list[dict[str, Any]]) -> str:
    lines = [
        "| profile | coefficients | TTFT MAPE % | TPOT MAPE % | vs Vidur TTFT % | vs Vidur TPOT % |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for key, label in (("closed_form", "closed-form fit"), ("engine_fit", "engine fit")):
            lines.append(
                f"| {r['profile']} | {label} | {r[key]['ttft_mape_pct']:.1f} | "
                f"{r[key]['tpot_mape_pct']:.1f} | {r['vidur'][key]['ttft_mape_pct']:.1f} | "
                f"{r['vidur'][key]['tpot_mape_pct']:.1f} |"
            )
    return "\n".join(lines)


def _sig(x: float, digits: int = 5) -> float:
    return 0.0 if x == 0 else float(f"{x:.{digits - 1}e}")


def engine_fit_record(results: list[dict[str, Any]], ship: set[str]) -> dict[str, Any]:
    """The compact record `rlscale profiles fit` reads (rlscale/profiles/engine_fit.json)."""
    out: dict[str, Any] = {
        "generated_by": "python benchmarks/calibration.py"
        + "".join(f" --ship {s}" for s in sorted(ship)),
        "method": (
            f"each aiconfigurator point run as its closed-loop benchmark in the request-level "
            f"engine (one replica, {PROMPTS_PER_CLIENT} prompts per client, lengths +-"
            f"{RANGE_RATIO:.0%}), least squares on log errors of mean TTFT and TPOT "
            "(rlscale.serving.benchfit)"
        ),
        "profiles": {},
    }
    for r in results:
        out["profiles"][r["profile"]] = {
            "shipped": r["profile"] in ship,
            "coef": {k: _sig(v) for k, v in r["engine_fit"]["coef"].items()},
            "points": r["points"],
            "ttft_points": r["ttft_points"],
            **{
                f"{key}_{m}": round(r[key][m], 2)
                for key in ("closed_form", "engine_fit")
                for m in ("ttft_mape_pct", "tpot_mape_pct")
            },
            **{
                f"vidur_{key}_{m}": round(r["vidur"][key][m], 2)
                for key in ("closed_form", "engine_fit")
                for m in ("ttft_mape_pct", "tpot_mape_pct")
            },
            "vidur_source": r["vidur"]["source"],
            "vidur_scale_to_equal_capacity": round(r["vidur"]["scale_to_equal_capacity"], 3),
            "sensitivity": {
                k: {
                    key: {m: round(v[key][m], 2) for m in ("ttft_mape_pct", "tpot_mape_pct")}
                    for key in ("closed_form", "engine_fit")
                }
                for k, v in r["sensitivity_prompts_per_client"].items()
            },
            "per_point": [
                {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}
                for row in r["per_point"]
            ],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "calibration.json")
    ap.add_argument("--ship", nargs="*", default=[], help="profiles to ship the engine fit for")
    ap.add_argument(
        "--record", type=Path, default=PROFILE_DIR / ENGINE_FIT_FILE, help="engine_fit.json"
    )
    args = ap.parse_args()
    data_dir = args.data or default_data_dir()
    names = shipped_profiles()
    unknown = set(args.ship) - set(names)
    if unknown:
        raise SystemExit(f"--ship: unknown profiles {sorted(unknown)}; known: {names}")
    t0 = time.perf_counter()
    results = [calibrate(data_dir, n) for n in names]
    payload = {"results": results, "total_wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=lambda x: None) + "\n")
    args.record.write_text(json.dumps(engine_fit_record(results, set(args.ship)), indent=1) + "\n")
    print(summary(results))
    for r in results:
        s = r["sensitivity_prompts_per_client"]
        print(
            f"{r['profile']}: engine fit {json.dumps({k: round(v, 5) for k, v in r['engine_fit']['coef'].items()})}; "
            + "; ".join(
                f"{k} prompts/client: TTFT {v['closed_form']['ttft_mape_pct']:.1f} -> "
                f"{v['engine_fit']['ttft_mape_pct']:.1f}, TPOT {v['closed_form']['tpot_mape_pct']:.1f} -> "
                f"{v['engine_fit']['tpot_mape_pct']:.1f}"
                for k, v in s.items()
            )
        )
    print(f"wrote {args.out} and {args.record} ({payload['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
