"""How a fleet of ready replicas serves one control interval: a fluid continuous-batching model,
batched over B clusters (numpy only).

Per replica, a request's service time at batch concurrency c is affine in c (from the profile):

    S(c) = TTFT(c, isl) + osl * TPOT(c, ctx) = s0 + s1 * c

so a replica completes mu(c) = c / S(c) requests/s, at most mu_max = c_max / S(c_max) at its
KV-cache knee c_max. In one interval of dt seconds the fleet can admit ready * mu_max * dt
requests; the rest of (queue + arrivals) waits, and a request that would wait past `timeout_s`
is dropped (the client gives up). Below saturation, Little's law on the batch gives the
concurrency: x = c / (s0 + s1 c)  =>  c = x s0 / (1 - x s1), for admitted rate x per replica.

Latency distributions, per interval (a fluid model has no individual requests, so percentiles
come from three independent parts, combined as medians plus the root-sum-square of each part's
distance from its median at that quantile):

* queue wait: the queue moves linearly from its start to its end value over the interval, and a
  request arriving at fraction u of it waits queue(u) / drain rate;
* burst wait: second-scale bursts queue even below saturation; the mean is Sakasegawa's GI/G/m
  approximation, Wq = (ca^2 + 1)/2 * rho^(sqrt(2(m+1)) - 1) / (m (1 - rho)) * S with m = ready *
  c_max batch slots, taken as exponential;
* prefill: affine in the prompt length, which is lognormal with the workload's CV.

SLO attainment of an interval is the share of its arrivals whose TTFT (interpolated on the same
quantile grid) and TPOT (lognormal in context length) are both within the SLO.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.special import ndtr, ndtri

from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.profiles.model import ServiceProfile

# Quantile grid for the TTFT distribution; 0 and 1 close it for interpolation.
P_GRID = _P_GRID = np.array([0.0, 0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0])
_Z_GRID = ndtri(np.clip(_P_GRID, 1e-4, 1 - 1e-4))  # standard-normal quantiles, clipped tails
_EXP_GRID = -np.log1p(-np.clip(_P_GRID, 0.0, 1 - 1e-4))  # exponential quantiles (mean 1)
_I50, _I95, _I99 = 3, 6, 7
_SIGN = np.where(_P_GRID >= 0.5, 1.0, -1.0)[None, :]  # below / above the median


@dataclass(frozen=True)
class SimConfig:
    interval_s: float = 15.0
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S
    tpot_slo_s: float = DEFAULT_TPOT_SLO_S
    timeout_s: float = 120.0  # a request waiting longer is dropped
    latency_jitter: float = 0.0  # lognormal sigma on every latency coefficient, per cluster
    cold_start_jitter: float = 0.0  # lognormal sigma on cold-start durations, per cluster
    arrival_scv: float = 1.0  # squared CV of second-scale inter-arrival times (bursts)


@dataclass
class LatencyArrays:
    """A profile's latency model as per-cluster arrays (B,), so each cluster can carry its own
    jittered copy for domain randomisation."""

    tpot_base_ms: np.ndarray
    tpot_ms_per_seq: np.ndarray
    tpot_ms_per_seq_per_ktok: np.ndarray
    tpot_ms_per_prefill_token: np.ndarray
    prefill_base_ms: np.ndarray
    prefill_ms_per_token: np.ndarray
    prefill_interference: np.ndarray
    kv_cache_tokens: np.ndarray
    max_batch: np.ndarray

    @classmethod
    def from_profile(cls, profile: ServiceProfile, batch: int) -> LatencyArrays:
        lat = profile.latency
        return cls(**{f.name: np.full(batch, float(getattr(lat, f.name))) for f in fields(cls)})

    def jitter(self, rng: np.random.Generator, scale: float, mask: np.ndarray | None = None) -> None:
        """Multiply every coefficient by an independent lognormal factor (sigma = scale)."""
        for f in fields(self):
            arr = getattr(self, f.name)
            factor = np.exp(rng.normal(0.0, scale, arr.shape))
            if mask is not None:
                factor = np.where(mask, factor, 1.0)
            arr *= factor


@dataclass
class ServeResult:
    """Outcome of one interval per cluster (all arrays (B,))."""

    started: np.ndarray  # requests admitted into a batch
    completed: np.ndarray
    dropped: np.ndarray
    queue: np.ndarray  # waiting at the end
    running: np.ndarray  # in flight at the end
    concurrency: np.ndarray  # per ready replica
    kv_cache_usage: np.ndarray  # 0..1
    gpu_utilization_pct: np.ndarray
    ttft_p50_s: np.ndarray
    ttft_p95_s: np.ndarray
    ttft_p99_s: np.ndarray
    tpot_p50_s: np.ndarray
    tpot_p95_s: np.ndarray
    tpot_p99_s: np.ndarray
    slo_ok: np.ndarray  # arrivals of this interval within both SLOs
    capacity_rps: np.ndarray  # ready * mu_max
    ttft_q: np.ndarray  # (B, len(P_GRID)) TTFT quantiles at P_GRID, for pooled percentiles
    tpot_q: np.ndarray  # (B, len(P_GRID)) TPOT quantiles at P_GRID


def serve_interval(
    queue: np.ndarray,
    running: np.ndarray,
    ready: np.ndarray,
    arrivals: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    dt_s: float,
    lat: LatencyArrays,
    *,
    prompt_cv: float | np.ndarray = 1.0,
    arrival_scv: float | np.ndarray = 1.0,
    timeout_s: float = 120.0,
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
    tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
) -> ServeResult:
    """Serve one interval. Conservation holds exactly per cluster:
    queue + arrivals = started + queue_end + dropped and running + started = completed + running_end.
    """
    ready = np.asarray(ready, dtype=np.float64)
    ctx = prompt_tokens + 0.5 * output_tokens
    c_max = np.minimum(lat.max_batch, lat.kv_cache_tokens / ctx)
    # per-sequence TPOT slope: its own decode, its context, and the prompt tokens that chunked
    # prefill mixes into each decode step (isl/osl of them per output token)
    per_seq_ms = lat.tpot_ms_per_seq + lat.tpot_ms_per_prefill_token * prompt_tokens / output_tokens
    slope = per_seq_ms + lat.tpot_ms_per_seq_per_ktok * (ctx / 1000.0)
    prefill_ms = lat.prefill_ms_per_token * prompt_tokens
    s0 = (lat.prefill_base_ms + prefill_ms + output_tokens * lat.tpot_base_ms) / 1000.0
    s1 = (prefill_ms * lat.prefill_interference / lat.max_batch + output_tokens * slope) / 1000.0
    mu_max = c_max / (s0 + s1 * c_max)
    drain_rps = ready * mu_max
    cap = drain_rps * dt_s

    demand = queue + arrivals
    started = np.minimum(demand, cap)
    q_end = demand - started
    # Clients give up after timeout_s: the queue holds at most timeout_s of drain (or arrivals
    # when nothing drains).
    q_cap = np.maximum(drain_rps, arrivals / dt_s) * timeout_s
    dropped = np.maximum(q_end - q_cap, 0.0)
    q_end = q_end - dropped

    has_ready = ready > 0
    safe_ready = np.where(has_ready, ready, 1.0)
    x = started / (safe_ready * dt_s)
    c = np.where(has_ready, np.minimum(x * s0 / np.maximum(1.0 - x * s1, 1e-9), c_max), 0.0)
    completed = np.maximum(running + started - ready * c, 0.0)
    running_end = running + started - completed

    # queue wait ramp (seconds) from the start to the end of the interval
    safe_drain = np.where(has_ready, drain_rps, 1.0)
    w0 = np.minimum(np.where(has_ready, queue / safe_drain, np.where(queue > 0, timeout_s, 0.0)), timeout_s)
    w1 = np.minimum(np.where(has_ready, q_end / safe_drain, np.where(q_end + dropped > 0, timeout_s, 0.0)), timeout_s)
    w_lo = np.minimum(w0, w1)
    w_span = np.abs(w1 - w0)
    # burst wait (Sakasegawa), mean; m batch slots at utilisation rho
    m = np.maximum(ready * c_max, 1.0)
    # Once saturated the fluid queue above carries the waiting; the burst term covers the
    # approach to the knee only (rho capped at 0.97, i.e. at most ~33x the service time / m).
    rho = np.clip(np.where(has_ready & (q_end <= 0), x / mu_max, 0.0), 0.0, 0.97)
    service_s = s0 + s1 * c
    wq = (arrival_scv + 1.0) * 0.5 * rho ** (np.sqrt(2.0 * (m + 1.0)) - 1.0) / (m * (1.0 - rho)) * service_s
    # prefill: base + per_token * isl * interference, lognormal in isl
    sig_p = np.broadcast_to(np.sqrt(np.log1p(np.square(prompt_cv))), ready.shape)[:, None]
    pf_scale = (
        lat.prefill_ms_per_token * prompt_tokens * (1.0 + lat.prefill_interference * c / lat.max_batch) / 1000.0
    )
    pf_base = lat.prefill_base_ms / 1000.0

    # (B, P) quantiles of each part, combined around the medians
    wait_q = w_lo[:, None] + w_span[:, None] * _P_GRID[None, :]
    burst_q = wq[:, None] * _EXP_GRID[None, :]
    pf_q = pf_base[:, None] + pf_scale[:, None] * np.exp(sig_p * _Z_GRID[None, :] - 0.5 * np.square(sig_p))
    med = wait_q[:, _I50:_I50 + 1] + burst_q[:, _I50:_I50 + 1] + pf_q[:, _I50:_I50 + 1]
    dev = np.sqrt(
        np.square(wait_q - wait_q[:, _I50:_I50 + 1])
        + np.square(burst_q - burst_q[:, _I50:_I50 + 1])
        + np.square(pf_q - pf_q[:, _I50:_I50 + 1])
    )
    ttft_q = np.maximum(med + _SIGN * dev, 0.0)
    ttft_q = np.maximum.accumulate(ttft_q, axis=1)

    # share of arrivals with TTFT <= SLO: interpolate p where ttft_q crosses the SLO
    below = ttft_q <= ttft_slo_s
    k = below.sum(axis=1)  # grid points within SLO (monotone, so the first k)
    k_hi = np.minimum(k, len(_P_GRID) - 1)
    k_lo = np.maximum(k - 1, 0)
    rows = np.arange(len(k))
    q_lo = ttft_q[rows, k_lo]
    q_hi = ttft_q[rows, k_hi]
    frac = np.clip((ttft_slo_s - q_lo) / np.maximum(q_hi - q_lo, 1e-12), 0.0, 1.0)
    p_ttft = np.where(k == 0, 0.0, _P_GRID[k_lo] + (_P_GRID[k_hi] - _P_GRID[k_lo]) * frac)
    p_ttft = np.where(k == len(_P_GRID), 1.0, p_ttft)

    # TPOT: base + (b0 + b1 * ctx/1000) * c, ctx lognormal with the prompt's spread
    tpot_base = lat.tpot_base_ms / 1000.0
    b0c = per_seq_ms * c / 1000.0
    b1c = lat.tpot_ms_per_seq_per_ktok * c / 1e6  # per context token
    sig_c = np.sqrt(np.log1p(np.square(prompt_cv)))
    mu_c = np.log(ctx) - 0.5 * np.square(sig_c)

    tpot_q = (tpot_base + b0c)[:, None] + b1c[:, None] * np.exp(
        mu_c[:, None] + np.broadcast_to(sig_c, c.shape)[:, None] * _Z_GRID[None, :]
    )

    headroom = tpot_slo_s - tpot_base - b0c
    with np.errstate(divide="ignore", invalid="ignore"):
        ctx_limit = np.where(b1c > 0, headroom / np.where(b1c > 0, b1c, 1.0), np.inf)
        p_tpot = np.where(
            headroom <= 0,
            0.0,
            np.where(np.isinf(ctx_limit), 1.0, ndtr((np.log(np.maximum(ctx_limit, 1e-12)) - mu_c) / sig_c)),
        )
    slo_ok = arrivals * p_ttft * p_tpot

    return ServeResult(
        started=started,
        completed=completed,
        dropped=dropped,
        queue=q_end,
        running=running_end,
        concurrency=c,
        kv_cache_usage=np.minimum(c * ctx / lat.kv_cache_tokens, 1.0),
        gpu_utilization_pct=100.0 * (1.0 - np.exp(-c)),
        ttft_p50_s=ttft_q[:, _I50],
        ttft_p95_s=ttft_q[:, _I95],
        ttft_p99_s=ttft_q[:, _I99],
        tpot_p50_s=tpot_q[:, _I50],
        tpot_p95_s=tpot_q[:, _I95],
        tpot_p99_s=tpot_q[:, _I99],
        slo_ok=slo_ok,
        capacity_rps=drain_rps,
        ttft_q=ttft_q,
        tpot_q=tpot_q,
    )


@dataclass(frozen=True)
class ServingSnapshot:
    """One interval of one service (scalars), for the sandbox's emulated pods."""

    requests_waiting: float
    requests_running: float
    kv_cache_usage: float
    gpu_utilization_pct: float
    ttft_p50_s: float
    ttft_p95_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    tpot_p99_s: float
    started: float
    completed: float
    dropped: float
    prompt_tokens_served: float
    output_tokens_served: float
    slo_ok: float


class ServingModel:
    """`serve_interval` for a single service with its queue carried between calls."""

    def __init__(self, profile: ServiceProfile, *, ttft_slo_s: float = DEFAULT_TTFT_SLO_S, tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
                 timeout_s: float = 120.0, prompt_cv: float = 1.0) -> None:
        self.profile = profile
        self.lat = LatencyArrays.from_profile(profile, 1)
        self.queue = np.zeros(1)
        self.running = np.zeros(1)
        self._kw = dict(ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, timeout_s=timeout_s,
                        prompt_cv=prompt_cv)

    def step(self, ready_replicas: int, arrivals: float, prompt_tokens: float, output_tokens: float,
             dt_s: float) -> ServingSnapshot:
        r = serve_interval(
            self.queue, self.running, np.array([float(ready_replicas)]), np.array([float(arrivals)]),
            np.array([float(prompt_tokens)]), np.array([float(output_tokens)]), dt_s, self.lat, **self._kw,
        )
        self.queue, self.running = r.queue, r.running
        return ServingSnapshot(
            requests_waiting=float(r.queue[0]),
            requests_running=float(r.running[0]),
            kv_cache_usage=float(r.kv_cache_usage[0]),
            gpu_utilization_pct=float(r.gpu_utilization_pct[0]),
            ttft_p50_s=float(r.ttft_p50_s[0]),
            ttft_p95_s=float(r.ttft_p95_s[0]),
            ttft_p99_s=float(r.ttft_p99_s[0]),
            tpot_p50_s=float(r.tpot_p50_s[0]),
            tpot_p95_s=float(r.tpot_p95_s[0]),
            tpot_p99_s=float(r.tpot_p99_s[0]),
            started=float(r.started[0]),
            completed=float(r.completed[0]),
            dropped=float(r.dropped[0]),
            prompt_tokens_served=float(r.started[0] * prompt_tokens),
            output_tokens_served=float(r.completed[0] * output_tokens),
            slo_ok=float(r.slo_ok[0]),
        )
