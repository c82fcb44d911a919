"""A synthetic workload with the shape of production LLM traffic, for use without a trace.

Rate (req/s) at time t, t = 0 being 00:00 of day 0 (a Monday unless `start_weekday` says
otherwise):

    rate(t) = peak_rps × diurnal(hour) × week(t) × noise(t) × bursts(t)

- `diurnal`: trough_ratio at 04:00, 1 at 14:00, smooth (a cosine with its phase stretched so
  the morning rise takes 10 h and the evening fall 14 h). peak/trough = 1 / trough_ratio
  (0.15 → 6.7×, inside the 5–10× swing production services see).
- `week`: 1 on weekdays, `weekend_factor` (0.7) on Saturday and Sunday, interpolated between
  noon points so the change happens overnight.
- `noise`: slow lognormal wander, AR(1) per minute with a 10-minute correlation time and CV
  `noise_cv` (0.08).
- `bursts`: Poisson(`bursts_per_day`) bursts of 2–10 minutes raising the rate 1.3–2× (half
  rectangular, half decaying; see `transforms.burst_multiplier`).

Arrivals per bin are Poisson with mean rate × interval_s. Request sizes are lognormal with
the Azure LLM 2023 conv trace's mean and median (prompt 1,155 / 1,020 tokens, output 211 / 129;
a lognormal cannot match the mean, median and CV at once, so the CVs are those implied, 0.53 and
1.29, against 0.96 and 0.77 measured). A bin of n requests gets the mean of n such sizes, drawn
as a lognormal with the same mean and CV / √n (Fenton–Wilkinson).

`peak_rps` default 180: an 8B replica on one H100 serves very roughly 10–20 req/s at ~1k/200
tokens, so the afternoon peak needs ~12 replicas at 15 req/s (9–18 across that range).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import numpy as np

from rlscale.traces.transforms import burst_multiplier
from rlscale.traces.workload import Workload

DEFAULT_PEAK_RPS = 180.0
TROUGH_HOUR = 4.0
PEAK_HOUR = 14.0

# Azure LLM 2023 conv (README section 1): mean / median tokens.
PROMPT_TOKENS_MEAN, PROMPT_TOKENS_MEDIAN = 1155.0, 1020.0
OUTPUT_TOKENS_MEAN, OUTPUT_TOKENS_MEDIAN = 211.0, 129.0

DEFAULT_SYNTHETIC: MappingProxyType[str, Any] = MappingProxyType(
    {
        "days": 1.0,
        "interval_s": 1.0,
        "peak_rps": DEFAULT_PEAK_RPS,
        "trough_ratio": 0.15,
        "weekly": True,
        "bursts_per_day": 4.0,
    }
)


def synthetic_workload(
    days: float = 1.0,
    interval_s: float = 1.0,
    peak_rps: float = DEFAULT_PEAK_RPS,
    trough_ratio: float = 0.15,
    weekly: bool = True,
    bursts_per_day: float = 4.0,
    seed: int = 0,
    *,
    start_weekday: int = 0,
    weekend_factor: float = 0.7,
    noise_cv: float = 0.08,
    burst_magnitude: tuple[float, float] = (1.3, 2.0),
    burst_duration_s: tuple[float, float] = (120.0, 600.0),
    prompt_tokens_mean: float = PROMPT_TOKENS_MEAN,
    prompt_tokens_median: float = PROMPT_TOKENS_MEDIAN,
    output_tokens_mean: float = OUTPUT_TOKENS_MEAN,
    output_tokens_median: float = OUTPUT_TOKENS_MEDIAN,
    name: str | None = None,
) -> Workload:
    """Generate `days` of traffic in `interval_s` bins (see the module docstring for the model)."""
    if not (days > 0 and interval_s > 0 and peak_rps > 0):
        raise ValueError(
            f"days, interval_s and peak_rps must be > 0, got {days}, {interval_s}, {peak_rps}"
        )
    if not 0 < trough_ratio <= 1:
        raise ValueError(f"trough_ratio must be in (0, 1], got {trough_ratio}")
    if (
        not prompt_tokens_mean >= prompt_tokens_median > 0
        or not output_tokens_mean >= output_tokens_median > 0
    ):
        raise ValueError(
            "token means must be >= their medians > 0 (a lognormal's mean exceeds its median)"
        )
    rng = np.random.default_rng(seed)
    n = max(1, int(round(days * 86_400.0 / interval_s)))
    t = (np.arange(n) + 0.5) * interval_s
    rate = peak_rps * diurnal_shape(t, trough_ratio)
    if weekly:
        rate *= week_factor(t, start_weekday, weekend_factor)
    if noise_cv > 0:
        rate *= _slow_noise(t, rng, noise_cv)
    burst, bursts = burst_multiplier(
        n,
        interval_s,
        rng,
        bursts_per_day=bursts_per_day,
        magnitude=burst_magnitude,
        duration_s=burst_duration_s,
    )
    rate *= burst
    arrivals = rng.poisson(rate * interval_s).astype(float)
    prompt, prompt_cv = _bin_mean_sizes(arrivals, prompt_tokens_mean, prompt_tokens_median, rng)
    output, output_cv = _bin_mean_sizes(arrivals, output_tokens_mean, output_tokens_median, rng)
    return Workload(
        name=name or f"synthetic-{days:g}d-seed{seed}",
        source="synthetic",
        interval_s=float(interval_s),
        arrivals=arrivals,
        prompt_tokens=prompt,
        output_tokens=output,
        start_s=0.0,
        prompt_tokens_cv=prompt_cv,
        output_tokens_cv=output_cv,
        meta={
            "format": "synthetic",
            "seed": seed,
            "params": {
                "days": days,
                "interval_s": interval_s,
                "peak_rps": peak_rps,
                "trough_ratio": trough_ratio,
                "weekly": weekly,
                "start_weekday": start_weekday,
                "weekend_factor": weekend_factor,
                "bursts_per_day": bursts_per_day,
                "noise_cv": noise_cv,
            },
            "bursts": bursts,
        },
    )


def default_workload(seed: int = 0) -> Workload:
    """The embedded default: one day (a Monday) at 1-s bins, `DEFAULT_SYNTHETIC` parameters."""
    return synthetic_workload(**DEFAULT_SYNTHETIC, seed=seed, name=f"synthetic-default-seed{seed}")


def diurnal_shape(t_s: np.ndarray, trough_ratio: float) -> np.ndarray:
    """Relative rate in [trough_ratio, 1]: trough at 04:00, peak at 14:00, smooth in between."""
    h = np.mod(np.asarray(t_s, dtype=float) / 3600.0, 24.0)
    since_trough = np.mod(h - TROUGH_HOUR, 24.0)
    rise = PEAK_HOUR - TROUGH_HOUR
    phase = np.where(
        since_trough < rise,
        math.pi * since_trough / rise,
        math.pi + math.pi * (since_trough - rise) / (24.0 - rise),
    )
    return trough_ratio + (1.0 - trough_ratio) * (1.0 - np.cos(phase)) / 2.0


def week_factor(t_s: np.ndarray, start_weekday: int = 0, weekend_factor: float = 0.7) -> np.ndarray:
    """1 on weekdays, `weekend_factor` on Saturday/Sunday, linear between noon points."""
    t = np.asarray(t_s, dtype=float)
    first = int(math.floor(t.min() / 86_400.0)) - 1
    last = int(math.ceil(t.max() / 86_400.0)) + 1
    days = np.arange(first, last + 1)
    levels = np.where(np.mod(days + start_weekday, 7) >= 5, weekend_factor, 1.0)
    return np.interp(t, days * 86_400.0 + 43_200.0, levels)


def _slow_noise(
    t_s: np.ndarray,
    rng: np.random.Generator,
    cv: float,
    step_s: float = 60.0,
    corr_s: float = 600.0,
) -> np.ndarray:
    """Lognormal multiplier with mean 1 and CV `cv`, log an AR(1) per `step_s` with correlation
    time `corr_s`: x_0 ~ N(0, σ²) (stationary start), x_i = ρ x_(i-1) + √(1-ρ²) σ ε_i."""
    n_steps = int(t_s.max() // step_s) + 2
    rho = math.exp(-step_s / corr_s)
    sigma = math.sqrt(math.log1p(cv**2))
    e = rng.standard_normal(n_steps) * sigma
    e[1:] *= math.sqrt(1 - rho**2)
    x = np.empty(n_steps)
    acc = 0.0
    for i, v in enumerate(e.tolist()):  # ~1,440 steps a day
        acc = rho * acc + v
        x[i] = acc
    return np.exp(x - sigma**2 / 2)[(t_s // step_s).astype(np.int64)]


def _bin_mean_sizes(
    arrivals: np.ndarray, mean: float, median: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Per-bin mean of lognormal request sizes (mean, median), and the per-request CV."""
    sigma2 = 2.0 * math.log(mean / median)
    cv = math.sqrt(math.expm1(sigma2))
    n = np.maximum(arrivals, 1.0)
    s2 = np.log1p(cv**2 / n)
    sizes = mean * np.exp(rng.standard_normal(len(arrivals)) * np.sqrt(s2) - s2 / 2)
    return np.where(arrivals > 0, sizes, mean), cv
