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
from functools import reduce

import numpy as np
from scipy.special import ndtr, ndtri

from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.profiles.model import ServiceProfile

# Quantile grid for the TTFT and TPOT distributions; 0 and 1 close it for interpolation.
P_GRID = np.array([0.0, 0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0])
_Z_GRID = ndtri(np.clip(P_GRID, 1e-4, 1 - 1e-4))  # standard-normal quantiles, clipped tails
_EXP_GRID = -np.log1p(-np.clip(P_GRID, 0.0, 1 - 1e-4))  # exponential quantiles (mean 1)
_SIGN = np.where(P_GRID >= 0.5, 1.0, -1.0)[None, :]  # below / above the median


def grid_index(p: float) -> int:
    """Column of probability `p` in P_GRID (an exact grid point, else ValueError)."""
    hits = np.flatnonzero(P_GRID == p)
    if len(hits) != 1:
        raise ValueError(f"{p} is not a point of P_GRID {P_GRID.tolist()}")
    return int(hits[0])


_P50, _P95, _P99 = grid_index(0.5), grid_index(0.95), grid_index(0.99)


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

    def jitter(
        self, rng: np.random.Generator, scale: float, mask: np.ndarray | None = None
    ) -> None:
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


@dataclass(frozen=True)
class _ServiceCurve:
    """Per replica, service time S(c) = s0 + s1 * c seconds at batch concurrency c (all (B,))."""

    ctx_tokens: np.ndarray  # mean context over a request's decode: isl + osl / 2
    c_max: np.ndarray  # KV-cache knee (or max_batch, whichever binds)
    per_seq_ms: np.ndarray  # TPOT slope per sequence, before its context term
    s0: np.ndarray
    s1: np.ndarray
    mu_max: np.ndarray  # requests/s at the knee: c_max / S(c_max)


def _service_curve(
    lat: LatencyArrays, prompt_tokens: np.ndarray, output_tokens: np.ndarray
) -> _ServiceCurve:
    ctx = prompt_tokens + 0.5 * output_tokens
    c_max = np.minimum(lat.max_batch, lat.kv_cache_tokens / ctx)
    # per-sequence TPOT slope: its own decode, its context, and the prompt tokens that chunked
    # prefill mixes into each decode step (isl/osl of them per output token)
    per_seq_ms = lat.tpot_ms_per_seq + lat.tpot_ms_per_prefill_token * prompt_tokens / output_tokens
    slope = per_seq_ms + lat.tpot_ms_per_seq_per_ktok * (ctx / 1000.0)
    prefill_ms = lat.prefill_ms_per_token * prompt_tokens
    s0 = (lat.prefill_base_ms + prefill_ms + output_tokens * lat.tpot_base_ms) / 1000.0
    s1 = (prefill_ms * lat.prefill_interference / lat.max_batch + output_tokens * slope) / 1000.0
    return _ServiceCurve(ctx, c_max, per_seq_ms, s0, s1, c_max / (s0 + s1 * c_max))


@dataclass(frozen=True)
class _Admission:
    started: np.ndarray  # admitted into a batch this interval
    queue_end: np.ndarray
    dropped: np.ndarray  # would have waited past timeout_s


def _admit(
    queue: np.ndarray, arrivals: np.ndarray, drain_rps: np.ndarray, dt_s: float, timeout_s: float
) -> _Admission:
    demand = queue + arrivals
    started = np.minimum(demand, drain_rps * dt_s)
    q_end = demand - started
    # Clients give up after timeout_s: the queue holds at most timeout_s of drain (or arrivals
    # when nothing drains).
    q_cap = np.maximum(drain_rps, arrivals / dt_s) * timeout_s
    dropped = np.maximum(q_end - q_cap, 0.0)
    return _Admission(started, q_end - dropped, dropped)


def _concurrency(
    started: np.ndarray, ready: np.ndarray, dt_s: float, curve: _ServiceCurve
) -> tuple[np.ndarray, np.ndarray]:
    """Little's law on the batch: admitted rate x per replica -> c = x s0 / (1 - x s1), capped at
    the knee. Returns (x, c); both 0 where no replica is ready."""
    has_ready = ready > 0
    x = started / (np.where(has_ready, ready, 1.0) * dt_s)
    c = np.where(
        has_ready, np.minimum(x * curve.s0 / np.maximum(1.0 - x * curve.s1, 1e-9), curve.c_max), 0.0
    )
    return x, c


def _queue_wait_q(
    queue: np.ndarray, adm: _Admission, ready: np.ndarray, drain_rps: np.ndarray, timeout_s: float
) -> np.ndarray:
    """(B, P) queue wait (s): the wait ramps linearly from the start to the end of the interval,
    so the ramp's quantile at p is its value at fraction p of its span."""
    has_ready = ready > 0
    safe_drain = np.where(has_ready, drain_rps, 1.0)
    w0 = np.minimum(
        np.where(has_ready, queue / safe_drain, np.where(queue > 0, timeout_s, 0.0)), timeout_s
    )
    w1 = np.minimum(
        np.where(
            has_ready,
            adm.queue_end / safe_drain,
            np.where(adm.queue_end + adm.dropped > 0, timeout_s, 0.0),
        ),
        timeout_s,
    )
    w_lo = np.minimum(w0, w1)
    w_span = np.abs(w1 - w0)
    return w_lo[:, None] + w_span[:, None] * P_GRID[None, :]


def _burst_wait_q(
    x: np.ndarray,
    c: np.ndarray,
    ready: np.ndarray,
    queue_end: np.ndarray,
    curve: _ServiceCurve,
    arrival_scv: float | np.ndarray,
) -> np.ndarray:
    """(B, P) burst wait (s): Sakasegawa's GI/G/m mean over m batch slots at utilisation rho,
    taken as exponential."""
    m = np.maximum(ready * curve.c_max, 1.0)
    # Once saturated the fluid queue carries the waiting; the burst term covers the approach to
    # the knee only (rho capped at 0.97, i.e. at most ~33x the service time / m).
    rho = np.clip(np.where((ready > 0) & (queue_end <= 0), x / curve.mu_max, 0.0), 0.0, 0.97)
    service_s = curve.s0 + curve.s1 * c
    wq = (
        (arrival_scv + 1.0)
        * 0.5
        * rho ** (np.sqrt(2.0 * (m + 1.0)) - 1.0)
        / (m * (1.0 - rho))
        * service_s
    )
    return wq[:, None] * _EXP_GRID[None, :]


def _prefill_q(
    c: np.ndarray, prompt_tokens: np.ndarray, lat: LatencyArrays, sig_isl: np.ndarray
) -> np.ndarray:
    """(B, P) prefill time (s): base + per_token * isl * interference, lognormal in isl."""
    pf_scale = (
        lat.prefill_ms_per_token
        * prompt_tokens
        * (1.0 + lat.prefill_interference * c / lat.max_batch)
        / 1000.0
    )
    pf_base = lat.prefill_base_ms / 1000.0
    sig_p = np.broadcast_to(sig_isl, c.shape)[:, None]
    return pf_base[:, None] + pf_scale[:, None] * np.exp(
        sig_p * _Z_GRID[None, :] - 0.5 * np.square(sig_p)
    )


def _combine_around_median(*parts_q: np.ndarray) -> np.ndarray:
    """(B, P) quantiles of a sum of independent parts: the sum of their medians plus (above the
    median) or minus (below) the root-sum-square of each part's distance from its median,
    floored at 0 and made monotone."""
    med = reduce(np.add, [q[:, _P50 : _P50 + 1] for q in parts_q])
    dev = np.sqrt(reduce(np.add, [np.square(q - q[:, _P50 : _P50 + 1]) for q in parts_q]))
    return np.maximum.accumulate(np.maximum(med + _SIGN * dev, 0.0), axis=1)


def _share_within(quantiles: np.ndarray, slo_s: float) -> np.ndarray:
    """(B,) probability that a value is <= slo_s, interpolated where the monotone (B, P)
    quantiles cross it."""
    k = (quantiles <= slo_s).sum(axis=1)  # grid points within SLO (monotone, so the first k)
    k_hi = np.minimum(k, len(P_GRID) - 1)
    k_lo = np.maximum(k - 1, 0)
    rows = np.arange(len(k))
    q_lo = quantiles[rows, k_lo]
    q_hi = quantiles[rows, k_hi]
    frac = np.clip((slo_s - q_lo) / np.maximum(q_hi - q_lo, 1e-12), 0.0, 1.0)
    p = np.where(k == 0, 0.0, P_GRID[k_lo] + (P_GRID[k_hi] - P_GRID[k_lo]) * frac)
    return np.where(k == len(P_GRID), 1.0, p)


def _tpot(
    c: np.ndarray, curve: _ServiceCurve, lat: LatencyArrays, sig_isl: np.ndarray, tpot_slo_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """TPOT = base + (b0 + b1 * ctx/1000) * c with ctx lognormal with the prompt's spread.
    Returns the (B, P) quantiles and the (B,) share within tpot_slo_s."""
    tpot_base = lat.tpot_base_ms / 1000.0
    b0c = curve.per_seq_ms * c / 1000.0
    b1c = lat.tpot_ms_per_seq_per_ktok * c / 1e6  # per context token
    mu_c = np.log(curve.ctx_tokens) - 0.5 * np.square(sig_isl)
    tpot_q = (tpot_base + b0c)[:, None] + b1c[:, None] * np.exp(
        mu_c[:, None] + np.broadcast_to(sig_isl, c.shape)[:, None] * _Z_GRID[None, :]
    )
    headroom = tpot_slo_s - tpot_base - b0c
    with np.errstate(divide="ignore", invalid="ignore"):
        ctx_limit = np.where(b1c > 0, headroom / np.where(b1c > 0, b1c, 1.0), np.inf)
        p_tpot = np.where(
            headroom <= 0,
            0.0,
            np.where(
                np.isinf(ctx_limit),
                1.0,
                ndtr((np.log(np.maximum(ctx_limit, 1e-12)) - mu_c) / sig_isl),
            ),
        )
    return tpot_q, p_tpot


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
    curve = _service_curve(lat, prompt_tokens, output_tokens)
    drain_rps = ready * curve.mu_max
    adm = _admit(queue, arrivals, drain_rps, dt_s, timeout_s)
    x, c = _concurrency(adm.started, ready, dt_s, curve)
    completed = np.maximum(running + adm.started - ready * c, 0.0)

    sig_isl = np.sqrt(np.log1p(np.square(prompt_cv)))  # lognormal sigma of the prompt length
    ttft_q = _combine_around_median(
        _queue_wait_q(queue, adm, ready, drain_rps, timeout_s),
        _burst_wait_q(x, c, ready, adm.queue_end, curve, arrival_scv),
        _prefill_q(c, prompt_tokens, lat, sig_isl),
    )
    tpot_q, p_tpot = _tpot(c, curve, lat, sig_isl, tpot_slo_s)

    return ServeResult(
        started=adm.started,
        completed=completed,
        dropped=adm.dropped,
        queue=adm.queue_end,
        running=running + adm.started - completed,
        concurrency=c,
        kv_cache_usage=np.minimum(c * curve.ctx_tokens / lat.kv_cache_tokens, 1.0),
        gpu_utilization_pct=100.0 * (1.0 - np.exp(-c)),
        ttft_p50_s=ttft_q[:, _P50],
        ttft_p95_s=ttft_q[:, _P95],
        ttft_p99_s=ttft_q[:, _P99],
        tpot_p50_s=tpot_q[:, _P50],
        tpot_p95_s=tpot_q[:, _P95],
        tpot_p99_s=tpot_q[:, _P99],
        slo_ok=arrivals * _share_within(ttft_q, ttft_slo_s) * p_tpot,
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

    def __init__(
        self,
        profile: ServiceProfile,
        *,
        ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
        tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
        timeout_s: float = 120.0,
        prompt_cv: float = 1.0,
    ) -> None:
        self.profile = profile
        self.lat = LatencyArrays.from_profile(profile, 1)
        self.queue = np.zeros(1)
        self.running = np.zeros(1)
        self._kw = dict(
            ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, timeout_s=timeout_s, prompt_cv=prompt_cv
        )

    def step(
        self,
        ready_replicas: int,
        arrivals: float,
        prompt_tokens: float,
        output_tokens: float,
        dt_s: float,
    ) -> ServingSnapshot:
        r = serve_interval(
            self.queue,
            self.running,
            np.array([float(ready_replicas)]),
            np.array([float(arrivals)]),
            np.array([float(prompt_tokens)]),
            np.array([float(output_tokens)]),
            dt_s,
            self.lat,
            **self._kw,
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
