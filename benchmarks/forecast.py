"""Does a forecast beat seasonal-naive and last-value? (issue 13, item 2: a forecast feature goes
into the observation only if it does, on the validation windows.)

    python benchmarks/forecast.py [--horizon-s 60 --horizon-s 132 ...]

For each ServeGen language service with two weeks of history (m-large, m-mid) and each horizon
h, at every 15-s step t the forecasters predict the mean arrival rate over the minute ending at
t + h (what the fleet must carry when a replica asked for at t is Ready: h = the profile's mean
cold start, 132 s for the 8B profile, 324 s for the 70B one), from the rates up to t only:

    last-value      the mean rate over the last minute
    seasonal-day    the rate at t + h one day earlier (PromQL: `offset 1d`)
    seasonal-week   the rate at t + h one week earlier (`offset 1w`)
    seasonal-ratio  seasonal-day x (last 30 min / the same 30 min a day earlier), what the
                    `predictive` policy does
    holt            Holt's level + trend (alpha 0.3, beta 0.05, the `predictive` defaults) on the
                    15-s rates, projected h ahead

Scored on the training days (1-9, day 0 and, for the weekly forecaster, days 0-6 have no
history) and on the validation window (day 10, hours 0-12); the test day (11) is never read.
Errors: MAPE, and the 95th percentile of the under-forecast ratio (actual / forecast - 1 when
the forecast is short): the part of an error that costs SLO. Writes
benchmarks/results/forecast.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rlscale.evaluation.evaluate import load_source

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SERVICES = ("servegen_language_m-large_total_10min", "servegen_language_m-mid_total_10min")
INTERVAL_S = 15.0
DAY = int(86_400 / INTERVAL_S)
MINUTE = int(60 / INTERVAL_S)
RATIO_WINDOW = int(1800 / INTERVAL_S)
# (name, first day, last day exclusive in days, hours of the last day): training and validation
SPLITS = (("train days 1-9", 1.0, 10.0), ("validation day 10 h0-12", 10.0, 10.5))


def trailing_mean(x: np.ndarray, n: int) -> np.ndarray:
    """out[t] = mean of x[t-n+1 .. t] (NaN where the window starts before 0)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(x.shape, np.nan)
    out[n - 1 :] = (c[n:] - c[:-n]) / n
    return out


def holt(x: np.ndarray, steps_ahead: int, alpha: float = 0.3, beta: float = 0.05) -> np.ndarray:
    """Holt's linear trend on x, the forecast made at t for t + steps_ahead."""
    out = np.empty_like(x)
    level, trend = x[0], 0.0
    for t, v in enumerate(x):
        prev = level
        level = alpha * v + (1 - alpha) * (prev + trend)
        trend = beta * (level - prev) + (1 - beta) * trend
        out[t] = max(level + steps_ahead * trend, 0.0)
    return out


def forecasts(rate: np.ndarray, h: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The target (mean rate over the minute ending at t + h) and every forecast made at t."""
    minute = trailing_mean(rate, MINUTE)
    n = len(rate)
    target = np.full(n, np.nan)
    target[: n - h] = minute[h:]

    def shifted(lag: int) -> np.ndarray:  # the minute ending at t + h, `lag` steps earlier
        out = np.full(n, np.nan)
        src = np.arange(n) + h - lag
        ok = (src >= 0) & (src < n)
        out[ok] = minute[src[ok]]
        return out

    day = shifted(DAY)
    now_30 = trailing_mean(rate, RATIO_WINDOW)
    then_30 = np.full(n, np.nan)
    then_30[DAY:] = now_30[:-DAY]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(then_30 > 0, now_30 / then_30, np.nan)
    return target, {
        "last-value": minute,
        "seasonal-day": day,
        "seasonal-week": shifted(7 * DAY),
        "seasonal-ratio": day * ratio,
        "holt": holt(rate, h),
    }


def score(target: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(target) & np.isfinite(pred) & (target > 0) & (pred > 0)
    t, p = target[ok], pred[ok]
    under = np.maximum(t / p - 1.0, 0.0)
    return {
        "mape_pct": float(100 * np.mean(np.abs(p - t) / t)),
        "under_p95_pct": float(100 * np.percentile(under, 95)),
        "points": int(ok.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--horizon-s", type=float, action="append")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "forecast.json"))
    args = ap.parse_args()
    horizons = args.horizon_s or [60.0, 132.0, 324.0, 900.0]
    rows = []
    for svc in SERVICES:
        # days 0..10.5 only: the test day is never read
        w = load_source(f"{DATA}/{svc}.csv@0:10.5", INTERVAL_S, 0)
        rate = w.arrivals / INTERVAL_S
        for hs in horizons:
            h = int(round(hs / INTERVAL_S))
            target, preds = forecasts(rate, h)
            for split, d0, d1 in SPLITS:
                sl = slice(int(d0 * DAY), int(d1 * DAY) - h)
                for name, p in preds.items():
                    rows.append(
                        {
                            "service": svc,
                            "horizon_s": hs,
                            "split": split,
                            "forecaster": name,
                            **score(target[sl], p[sl]),
                        }
                    )
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=1))
    md = [
        "| service | horizon s | split | forecaster | MAPE % | under-forecast p95 % |",
        "|---|---:|---|---|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['service'].replace('servegen_language_', '').replace('_total_10min', '')} "
            f"| {r['horizon_s']:.0f} | {r['split']} | {r['forecaster']} | {r['mape_pct']:.1f} "
            f"| {r['under_p95_pct']:.1f} |"
        )
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
