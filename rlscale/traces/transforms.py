"""Pure transforms on `Workload`s. Each returns a new Workload and appends what it did to
`meta['transforms']` (a list of dicts, oldest first); the input is never modified.

| transform        | arrivals total                 | rates (req/s)              |
|------------------|--------------------------------|----------------------------|
| `slice_window`   | the bins kept                  | unchanged                  |
| `scale_rate`     | × factor                       | × factor                   |
| `scale_to_fleet` | × (replicas × capacity / peak) | same factor                |
| `compress_time`  | ÷ factor                       | unchanged, played faster   |
| `superpose`      | sum of the inputs              | sum of the inputs          |
| `augment`        | random (see its docstring)     | random                     |
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlscale.errors import InputError
from rlscale.traces.workload import Workload


def slice_window(w: Workload, start_s: float, end_s: float) -> Workload:
    """The bins overlapping [start_s, end_s), times relative to the workload's start.

    A bin is kept whole if any part of it lies in the range, so the slice starts at the bin
    containing `start_s`; `end_s` past the end is clipped."""
    if not (0 <= start_s < end_s):
        raise InputError(
            w.name,
            f"expected 0 <= start_s < end_s, got start_s={start_s}, end_s={end_s}",
            field="slice",
        )
    if start_s >= w.duration_s:
        raise InputError(
            w.name,
            f"start_s={start_s} is past the end of the workload ({w.duration_s:g} s)",
            field="slice",
        )
    i0 = int(math.floor(start_s / w.interval_s + 1e-9))
    i1 = min(w.n_bins, max(i0 + 1, int(math.ceil(end_s / w.interval_s - 1e-9))))
    return _record(
        w.with_(
            arrivals=w.arrivals[i0:i1].copy(),
            prompt_tokens=w.prompt_tokens[i0:i1].copy(),
            output_tokens=w.output_tokens[i0:i1].copy(),
            start_s=w.start_s + i0 * w.interval_s,
        ),
        {"op": "slice_window", "start_s": float(start_s), "end_s": float(end_s), "bins": [i0, i1]},
    )


def scale_rate(w: Workload, factor: float) -> Workload:
    """Every bin's arrivals × `factor` (counts become fractional; sizes unchanged)."""
    _positive(w, factor, "factor")
    return _record(
        w.with_(arrivals=w.arrivals * factor), {"op": "scale_rate", "factor": float(factor)}
    )


def scale_prompts(w: Workload, factor: float) -> Workload:
    """Every bin's mean prompt × `factor` (rates and output sizes unchanged): the same traffic as
    a long-context service, e.g. Azure conv's ~1.2k-token prompts × 10 for a 12k-token RAG
    service (`rlscale traces convert --prompt-scale 10`)."""
    _positive(w, factor, "prompt_scale")
    return _record(
        w.with_(prompt_tokens=w.prompt_tokens * factor),
        {"op": "scale_prompts", "factor": float(factor)},
    )


def scale_to_fleet(
    w: Workload,
    replicas_at_peak: float,
    replica_capacity_rps: float,
    peak_quantile: float = 0.99,
    *,
    over_s: float | None = 60.0,
) -> Workload:
    """Scale rates so that the `peak_quantile` bin needs `replicas_at_peak` replicas of
    `replica_capacity_rps` each: that quantile of the rate becomes replicas × capacity.

    The quantile is taken over the rate averaged in `over_s` windows (default one minute: a
    replica's queue absorbs second-scale noise, so sizing on 1-s p99 would size for noise);
    `over_s=None` uses the bins as they are. Example: p99 of the 1-min rate 195 req/s, 12
    replicas × 15 req/s = 180 → factor 0.923."""
    _positive(w, replicas_at_peak, "replicas_at_peak")
    _positive(w, replica_capacity_rps, "replica_capacity_rps")
    if not 0 < peak_quantile <= 1:
        raise InputError(
            w.name, f"expected 0 < peak_quantile <= 1, got {peak_quantile}", field="peak_quantile"
        )
    ref = w if over_s is None or over_s <= w.interval_s else w.rebin(over_s)
    peak = float(np.quantile(ref.rate_rps, peak_quantile))
    if peak <= 0:
        raise InputError(
            w.name,
            f"the p{peak_quantile * 100:g} rate is 0: nothing to scale",
            field="peak_quantile",
        )
    target = replicas_at_peak * replica_capacity_rps
    factor = target / peak
    return _record(
        w.with_(arrivals=w.arrivals * factor),
        {
            "op": "scale_to_fleet",
            "replicas_at_peak": float(replicas_at_peak),
            "replica_capacity_rps": float(replica_capacity_rps),
            "peak_quantile": float(peak_quantile),
            "over_s": over_s,
            "peak_rps_before": peak,
            "factor": factor,
        },
    )


def compress_time(w: Workload, factor: float) -> Workload:
    """Replay the same sequence of rates `factor` × faster: `interval_s /= factor` and
    `arrivals /= factor`, so every bin's rate (req/s) is unchanged while a day of shape plays
    in 24 h / factor (factor 24: a day in an hour). Total arrivals fall by `factor`; the start
    stays where it was. Use it to train on many diurnal cycles cheaply at realistic load levels."""
    _positive(w, factor, "factor")
    return _record(
        w.with_(interval_s=w.interval_s / factor, arrivals=w.arrivals / factor),
        {"op": "compress_time", "factor": float(factor)},
    )


def superpose(*ws: Workload, align: str = "clock", name: str | None = None) -> Workload:
    """Sum of several workloads on one grid (the finest `interval_s` among them).

    `align="clock"` places each on the time axis by its `start_s` (e.g. the two Azure traces of
    the same hour); `align="start"` lays them all from the first one's start (e.g. a ServeGen day
    over an Azure hour). Bins that do not line up are split by interpolating the cumulative
    arrivals, which conserves every total. Sizes are request-weighted means; the CVs combine as
    the CV of the pooled requests."""
    if not ws:
        raise InputError("superpose", "expected at least one workload")
    if align not in ("clock", "start"):
        raise InputError(
            "superpose", f"expected align 'clock' or 'start', got {align!r}", field="align"
        )
    dt = min(w.interval_s for w in ws)
    starts = [w.start_s if align == "clock" else ws[0].start_s for w in ws]
    t0 = min(starts)
    t1 = max(s + w.duration_s for s, w in zip(starts, ws, strict=True))
    n = max(1, math.ceil((t1 - t0) / dt - 1e-9))
    if n > 50_000_000:
        raise InputError(
            "superpose",
            f"the common grid would have {n:,} bins: the starts are far apart; use align='start'",
        )
    edges = t0 + dt * np.arange(n + 1)
    arrivals = np.zeros(n)
    tokens = [np.zeros(n), np.zeros(n)]
    for s, w in zip(starts, ws, strict=True):
        own = s + w.interval_s * np.arange(w.n_bins + 1)
        arrivals += _regrid(w.arrivals, own, edges)
        tokens[0] += _regrid(w.arrivals * w.prompt_tokens, own, edges)
        tokens[1] += _regrid(w.arrivals * w.output_tokens, own, edges)
    total = sum(w.total_requests for w in ws)
    means, cvs = [], []
    for attr, cv_attr, tok in (
        ("prompt_tokens", "prompt_tokens_cv", tokens[0]),
        ("output_tokens", "output_tokens_cv", tokens[1]),
    ):
        m_i = np.array([_mean_size(w, attr) for w in ws])
        n_i = np.array([w.total_requests for w in ws])
        cv_i = np.array([getattr(w, cv_attr) for w in ws])
        if total > 0:
            mean = float((n_i * m_i).sum() / total)
            second = float((n_i * m_i**2 * (1 + cv_i**2)).sum() / total)
            cvs.append(math.sqrt(max(second - mean**2, 0.0)) / mean if mean > 0 else 0.0)
        else:
            mean = float(m_i.mean())
            cvs.append(float(cv_i.mean()))
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(np.where(arrivals > 1e-9, tok / np.maximum(arrivals, 1e-12), mean))
    out = Workload(
        name=name or "+".join(w.name for w in ws),
        source=" + ".join(w.source for w in ws),
        interval_s=dt,
        arrivals=np.maximum(arrivals, 0.0),
        prompt_tokens=means[0],
        output_tokens=means[1],
        start_s=t0,
        prompt_tokens_cv=cvs[0],
        output_tokens_cv=cvs[1],
        meta={"parts": [{"name": w.name, "source": w.source, "meta": w.meta} for w in ws]},
    )
    return _record(out, {"op": "superpose", "align": align, "parts": [w.name for w in ws]})


def augment(
    w: Workload,
    rng: np.random.Generator,
    rate_scale: tuple[float, float] = (1.0, 1.0),
    noise_cv: float = 0.0,
    bursts_per_day: float = 0.0,
    burst_magnitude: tuple[float, float] = (1.5, 3.0),
    burst_duration_s: tuple[float, float] = (60.0, 600.0),
    *,
    noise_block_s: float = 60.0,
    burst_baseline_s: float = 300.0,
) -> Workload:
    """Domain randomisation for training: a new workload drawn from `rng` (deterministic given it).

    1. Rate scale: one factor, log-uniform in `rate_scale` (so (0.5, 2) is symmetric).
    2. Noise: a lognormal multiplier with mean 1 and CV `noise_cv`, one per `noise_block_s`
       block (per-second noise would average out within a control interval).
    3. Bursts: Poisson(`bursts_per_day` × days) bursts at uniform times; each multiplies the
       rate by m ~ U(`burst_magnitude`) for d ~ U(`burst_duration_s`) seconds, half of them
       rectangular and half decaying as 1 + (m − 1)·exp(−3τ/d). The extra (m − 1) × baseline
       arrivals (baseline = the rate averaged over `burst_baseline_s`, so a burst also lands in
       bins that happened to be empty) are Poisson and carry their bin's request sizes.
    """
    lo, hi = rate_scale
    if not 0 < lo <= hi:
        raise InputError(w.name, f"expected 0 < low <= high, got {rate_scale}", field="rate_scale")
    if noise_cv < 0 or bursts_per_day < 0:
        raise InputError(w.name, "noise_cv and bursts_per_day must be >= 0", field="augment")
    scale = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)
    mult = np.full(w.n_bins, scale)
    if noise_cv > 0:
        block = max(1, int(round(noise_block_s / w.interval_s)))
        n_blocks = -(-w.n_bins // block)
        sigma2 = math.log1p(noise_cv**2)
        noise = rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), n_blocks)
        mult *= np.repeat(noise, block)[: w.n_bins]
    arrivals = w.arrivals * mult
    burst_mult, bursts = burst_multiplier(
        w.n_bins,
        w.interval_s,
        rng,
        bursts_per_day=bursts_per_day,
        magnitude=burst_magnitude,
        duration_s=burst_duration_s,
    )
    if bursts:
        baseline = _moving_mean(arrivals, max(1, int(round(burst_baseline_s / w.interval_s))))
        arrivals = arrivals + rng.poisson((burst_mult - 1.0) * baseline)
    return _record(
        w.with_(arrivals=arrivals),
        {
            "op": "augment",
            "rate_scale": scale,
            "noise_cv": float(noise_cv),
            "noise_block_s": float(noise_block_s),
            "bursts": bursts,
        },
    )


def burst_multiplier(
    n_bins: int,
    interval_s: float,
    rng: np.random.Generator,
    *,
    bursts_per_day: float,
    magnitude: tuple[float, float],
    duration_s: tuple[float, float],
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rate multiplier per bin (1 outside bursts) and the bursts drawn (see `augment`)."""
    mult = np.ones(n_bins)
    duration = n_bins * interval_s
    n = int(rng.poisson(bursts_per_day * duration / 86_400.0)) if bursts_per_day > 0 else 0
    bursts: list[dict[str, Any]] = []
    t = (np.arange(n_bins) + 0.5) * interval_s
    for _ in range(n):
        start = float(rng.uniform(0.0, duration))
        m = float(rng.uniform(*magnitude))
        d = float(rng.uniform(*duration_s))
        shape = "rectangular" if rng.random() < 0.5 else "decaying"
        i0 = int(start // interval_s)
        i1 = min(n_bins, int(math.ceil((start + d) / interval_s)))
        tau = np.clip(t[i0:i1] - start, 0.0, None)
        if shape == "rectangular":
            bump = np.full(i1 - i0, m - 1.0)
        else:
            bump = (m - 1.0) * np.exp(-3.0 * tau / d)
        mult[i0:i1] += bump
        bursts.append({"start_s": start, "magnitude": m, "duration_s": d, "shape": shape})
    return mult, bursts


def _regrid(values: np.ndarray, own_edges: np.ndarray, edges: np.ndarray) -> np.ndarray:
    cum = np.concatenate([[0.0], np.cumsum(values)])
    return np.diff(np.interp(edges, own_edges, cum))


def _mean_size(w: Workload, attr: str) -> float:
    sizes = getattr(w, attr)
    total = w.total_requests
    return float((sizes * w.arrivals).sum() / total) if total > 0 else float(np.mean(sizes))


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    cum = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.clip(np.arange(len(x)) - width // 2, 0, len(x))
    hi = np.clip(lo + width, 0, len(x))
    return (cum[hi] - cum[lo]) / (hi - lo)


def _positive(w: Workload, value: float, field: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InputError(w.name, f"expected a number > 0, got {value}", field=field)


def _record(w: Workload, step: dict[str, Any]) -> Workload:
    meta = dict(w.meta)
    meta["transforms"] = [*meta.get("transforms", []), step]
    return w.with_(meta=meta)


def rate_factor(w: Workload) -> float:
    """How many times its source's rate `w` carries: the product of the rate scalings it records
    (1.0 for an unscaled trace)."""
    factor = 1.0
    for step in w.meta.get("transforms", []):
        if step.get("op") in ("scale_rate", "scale_to_fleet"):
            factor *= float(step["factor"])
    return factor
