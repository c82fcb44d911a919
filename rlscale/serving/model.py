"""How a fleet of ready replicas serves one control interval: a fluid continuous-batching model,
batched over B clusters (numpy only), held to the request-level engine (`serving.engine`).

The GPU is read as the engine reads it (one forward pass = one iteration):

    t_iter = tpot_base + (tpot_ms_per_seq + tpot_ms_per_seq_per_ktok * ctx/1000) * c
           + tpot_ms_per_prefill_token * prompt tokens in the iteration

with c requests in the batch holding ctx context tokens each. At admitted rate x per replica the
prompt tokens take rho_pf = pf * x * isl of the GPU's time, so the mean iteration is
T = t_dec / (1 - rho_pf). A request's residence is S(c) = s0 + s1 * c (its TTFT plus osl
iterations, Little's law on the batch), so a replica completes mu(c) = c / S(c) requests/s, at
most mu_max = c_max / S(c_max) at its knee c_max (max_batch or the KV cache, whichever binds).
The TTFT fit's `prefill_ms_per_token` and `prefill_interference` are not used: they were
measured closed-loop and include waiting behind other prefills, which this model adds itself.

Per interval the batch is state: `running` requests per cluster with their mean sizes. The
interval is cut into sub-steps; in each, the batch follows dR/dt = a - R / S (exact for S frozen
over the sub-step), admitting from the queue into the free slots plus the completions, at most
what chunked prefill takes in, so a burst fills free slots at once instead of queueing behind the
steady-state throughput. The batch is priced at its own running size mix, not at this bin's
means, and slows by the prompt share of what it admits (a burst slows the batch it joins).

TTFT of an admitted request = prefill_base (API server, off the GPU) + the rest of the iteration
in progress when it arrives (length-biased) + the next iteration, which carries the prompts that
arrived meanwhile and its own (lognormal in the prompt length). The waiting part and the own
prompt are summed as one lognormal with their exact mean and variance (Fenton-Wilkinson). A
request may also wait for a batch slot: the batch size wanders around its mean (a diffusion that
relaxes at mu'(c)), and with the probability that it sits at the knee the request waits for the
backlog that builds there (exponential). When the interval ends with a backlog, the backlog's
wait (it moves linearly over the interval at the knee drain rate) carries the waiting instead.
Parts are combined around their medians (root-sum-square of each part's distance from it).
Least-outstanding routing over n replicas evens out the per-replica arrival counts (their
variance / n) and steers arrivals away from a replica busy with a long prefill (the length bias
and the batch's wandering / sqrt(n)), as the engine's fleet shows.

TPOT of a request is the mean iteration over its decode: mean T, spread by the iterations'
variance averaged over its osl tokens and by the batch's wandering. SLO attainment of an interval is the share of its arrivals
whose TTFT (interpolated on the quantile grid) and TPOT are both within the SLO.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.profiles.model import ServiceProfile
from rlscale.slo import SLOClass

# Quantile grid for the TTFT and TPOT distributions; 0 and 1 close it for interpolation.
P_GRID = np.array([0.0, 0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0])
_Z_GRID = ndtri(np.clip(P_GRID, 1e-4, 1 - 1e-4))  # standard-normal quantiles, clipped tails
_SIGN = np.where(P_GRID >= 0.5, 1.0, -1.0)[None, :]  # below / above the median
_SUB_STEPS = 2  # admission / completion sub-steps per interval
# vLLM V1 max_num_batched_tokens on H100-class GPUs, as `serving.engine` (chunked prefill)
_PREFILL_BUDGET = 8192.0
_RHO_PF_MAX = 0.95  # prefill share of GPU time, capped (the knee binds before it)


def grid_index(p: float) -> int:
    """Column of probability `p` in P_GRID (an exact grid point, else ValueError)."""
    hits = np.flatnonzero(P_GRID == p)
    if len(hits) != 1:
        raise ValueError(f"{p} is not a point of P_GRID {P_GRID.tolist()}")
    return int(hits[0])


_P50, _P95, _P99 = grid_index(0.5), grid_index(0.95), grid_index(0.99)
_P05 = grid_index(0.05)
# exponential tail quantile ln(1 / (1 - p)), for a wait that happens with probability Pw
_NEG_LOG_TAIL = -np.log(np.clip(1.0 - P_GRID, 1e-4, 1.0))[None, :]


@dataclass(frozen=True)
class SimConfig:
    interval_s: float = 15.0
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S  # the SLO class (`rlscale.slo`): TTFT base
    tpot_slo_s: float = DEFAULT_TPOT_SLO_S
    # ... plus this per 1,000 prompt tokens (0: the flat SLO)
    ttft_slo_s_per_1k_tokens: float = 0.0
    timeout_s: float = 120.0  # a request waiting longer is dropped
    latency_jitter: float = 0.0  # lognormal sigma on every latency coefficient, per cluster
    cold_start_jitter: float = 0.0  # lognormal sigma on cold-start durations, per cluster
    arrival_scv: float = 1.0  # squared CV of second-scale inter-arrival times (bursts)
    # what a warm-pool member is (`profiles.standby`): sleeping replicas, warm or preloaded nodes
    standby_tier: str = "sleeping"

    @property
    def slo(self) -> SLOClass:
        return SLOClass(self.ttft_slo_s, self.ttft_slo_s_per_1k_tokens, self.tpot_slo_s)

    @classmethod
    def with_slo(cls, slo: SLOClass, **kw: float) -> SimConfig:
        """A config held to `slo` (the other fields from `kw` or their defaults)."""
        return cls(
            ttft_slo_s=slo.ttft_s,
            tpot_slo_s=slo.tpot_s,
            ttft_slo_s_per_1k_tokens=slo.ttft_s_per_1k_tokens,
            **kw,  # type: ignore[arg-type]
        )


@dataclass
class LatencyArrays:
    """A profile's latency model as per-cluster arrays (B,), so each cluster can carry its own
    jittered copy for domain randomisation."""

    tpot_base_ms: np.ndarray
    tpot_ms_per_seq: np.ndarray
    tpot_ms_per_seq_per_ktok: np.ndarray
    tpot_ms_per_prefill_token: np.ndarray
    prefill_base_ms: np.ndarray
    prefill_ms_per_token: np.ndarray  # kept for the profile's own readings; not used here
    prefill_interference: np.ndarray  # kept for the profile's own readings; not used here
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
    # mean sizes of the requests in flight at the end: the batch state to pass back next interval
    running_prompt_tokens: np.ndarray | None = None
    running_output_tokens: np.ndarray | None = None


class _Coeffs(NamedTuple):
    """The latency coefficients in seconds (all (B,)), read once per interval."""

    base_s: np.ndarray  # weights read once per iteration
    seq_s: np.ndarray  # per decoding sequence per iteration
    kv_tok_s: np.ndarray  # per context token read per iteration
    pf_s: np.ndarray  # per prompt token in an iteration
    overhead_s: np.ndarray  # prefill_base: API server, tokenisation (off the GPU)
    kv_tokens: np.ndarray
    max_batch: np.ndarray

    @staticmethod
    def of(lat: LatencyArrays) -> _Coeffs:
        return _Coeffs(
            lat.tpot_base_ms / 1e3,
            lat.tpot_ms_per_seq / 1e3,
            lat.tpot_ms_per_seq_per_ktok / 1e6,
            lat.tpot_ms_per_prefill_token / 1e3,
            lat.prefill_base_ms / 1e3,
            lat.kv_cache_tokens,
            lat.max_batch,
        )


class _ServiceCurve(NamedTuple):
    """Per replica, for requests of one size mix (all (B,), seconds)."""

    ctx_tokens: np.ndarray  # mean context over a request's decode: isl + osl / 2
    own_s: np.ndarray  # GPU time of its own prompt tokens
    c_max: np.ndarray  # knee: max_batch or the KV cache, whichever binds
    dec_s: np.ndarray  # decode cost per running sequence per iteration
    s0: np.ndarray  # residence S(c) = s0 + s1 * c = s0 + (s1_dec + own_s) * c
    s1_dec: np.ndarray  # the co-runners' decodes over our osl iterations
    s1: np.ndarray
    mu_max: np.ndarray  # requests/s at the knee: c_max / S(c_max)


def _service_curve(
    k: _Coeffs, prompt_tokens: np.ndarray, output_tokens: np.ndarray
) -> _ServiceCurve:
    ctx = prompt_tokens + 0.5 * output_tokens
    c_max = np.minimum(k.max_batch, k.kv_tokens / ctx)
    dec_s = k.seq_s + k.kv_tok_s * ctx
    own_s = k.pf_s * prompt_tokens
    s0 = k.overhead_s + own_s + output_tokens * k.base_s
    s1_dec = output_tokens * dec_s
    # per co-running request: its decode in each of our osl iterations, and its prompt once
    s1 = s1_dec + own_s
    return _ServiceCurve(ctx, own_s, c_max, dec_s, s0, s1_dec, s1, c_max / (s0 + s1 * c_max))


def knee_rps(
    lat: LatencyArrays, prompt_tokens: np.ndarray, output_tokens: np.ndarray
) -> np.ndarray:
    """(B,) requests/s one replica completes at its knee for requests of these sizes."""
    return _service_curve(_Coeffs.of(lat), prompt_tokens, output_tokens).mu_max


def steady_running(
    ready: np.ndarray,
    arrivals: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    dt_s: float,
    lat: LatencyArrays,
) -> np.ndarray:
    """(B,) requests in flight in steady state at this arrival rate (Little's law on the batch,
    c = x s0 / (1 - x s1) per replica, capped at the knee): the batch to start an interval from
    when asking what a fleet sustains (capacity, the oracle)."""
    curve = _service_curve(_Coeffs.of(lat), prompt_tokens, output_tokens)
    ready = np.asarray(ready, dtype=np.float64)
    x = arrivals / (np.maximum(ready, 1e-12) * dt_s)
    c = np.minimum(x * curve.s0 / np.maximum(1.0 - x * curve.s1, 1e-9), curve.c_max)
    return np.where(ready > 0, ready * np.where(x * curve.s1 < 1.0, c, curve.c_max), 0.0)


class _Batch(NamedTuple):
    """What the sub-steps of one interval did (all (B,))."""

    started: np.ndarray
    completed: np.ndarray
    queue_end: np.ndarray  # before drops
    running_end: np.ndarray
    c_avg: np.ndarray  # time-averaged batch per ready replica
    dec_s: np.ndarray  # decode cost per sequence per iteration of the mix in flight


def _mix(old: np.ndarray, new: np.ndarray, share_new: np.ndarray) -> np.ndarray:
    return old + (new - old) * share_new


def _run_batch(
    queue: np.ndarray,
    running: np.ndarray,
    arrivals: np.ndarray,
    ready: np.ndarray,
    inv_ready: np.ndarray,
    mix0: _ServiceCurve,
    curve: _ServiceCurve,
    k: _Coeffs,
    prompt_tokens: np.ndarray,
    dt_s: float,
) -> tuple[_Batch, np.ndarray]:
    """Sub-steps of h = dt / _SUB_STEPS: the batch (residence S frozen over a sub-step) follows
    dR/dt = a - R / S exactly, admitting the queue and the sub-step's arrivals up to what
    chunked prefill takes in (the token budget per iteration); what would overfill the slots
    (max_batch or the KV cache) keeps waiting, and a full batch completes (R + R_max) / 2 h / S. The batch is priced at its size mix: the
    carried one, blended with this bin's by the share of it replaced after j sub-steps at
    steady turnover (1 - exp(-j h / S)). Its residence is S = (s0 + s1_dec c) / (1 - rho_pf)
    with the prompt share of the GPU from what was admitted, not what completes (a burst slows
    the batch it joins); in steady state this is S(c) = s0 + s1 c. Returns the batch and the
    share of it that is this bin's at the end."""
    h = dt_s / _SUB_STEPS
    c0 = running * inv_ready
    s_old = mix0.s0 + mix0.s1 * c0
    turnover = -h / s_old
    share = -np.expm1(0.5 * _SUB_STEPS * turnover)  # by mid-interval
    dec_s = mix0.dec_s + (curve.dec_s - mix0.dec_s) * share
    r_max = ready * np.minimum(mix0.c_max, curve.c_max)  # the tighter of the two mixes' knees
    # chunked prefill: at most the token budget per iteration of t_dec + pf * budget
    a_cap = (ready * (h * _PREFILL_BUDGET)) / (
        (k.base_s + k.pf_s * _PREFILL_BUDGET + dec_s * c0) * prompt_tokens
    )
    arr_h = arrivals / _SUB_STEPS
    own_per_h = curve.own_s * inv_ready / h
    # the mix's residence terms at the start of each sub-step
    terms = [(mix0.s0, mix0.s1_dec)]
    for j in range(1, _SUB_STEPS):
        share_j = share if 2 * j == _SUB_STEPS else -np.expm1(j * turnover)
        terms.append((_mix(mix0.s0, curve.s0, share_j), _mix(mix0.s1_dec, curve.s1_dec, share_j)))
    one_m_rho = 1.0 - np.minimum(mix0.own_s * c0 / s_old, _RHO_PF_MAX)  # first: steady state
    q, r = queue, running
    started = c_sum = np.zeros_like(running)
    for j, (s0_j, s1_j) in enumerate(terms):
        h_s = one_m_rho * h / (s0_j + s1_j * (r * inv_ready))  # h / residence
        want = q + arr_h
        a = np.minimum(want, a_cap)
        a_s = a / h_s
        r_free = a_s + (r - a_s) * np.exp(-h_s)
        # completions: the free batch's, or a full one's (a trapezoid up to the slots)
        done = np.minimum(r + a - r_free, (0.5 * (r + r_max)) * h_s)
        adm = np.minimum(np.maximum(r_max - r + done, 0.0), a)
        r_h = r + adm - done
        q = want - adm
        if j + 1 < _SUB_STEPS:
            one_m_rho = 1.0 - np.minimum(own_per_h * adm, _RHO_PF_MAX)
        c_sum = c_sum + (r + r_h)
        started, r = started + adm, r_h
    # completions left the carried mix and this interval's requests pro rata
    new_share = np.minimum(started / np.maximum(running + started, 1e-12), 1.0)
    completed = running + started - r
    b = _Batch(started, completed, q, r, c_sum * (0.5 / _SUB_STEPS) * inv_ready, dec_s)
    return b, new_share


class _Iterations(NamedTuple):
    """Moments of the iteration time (s) at this batch and admitted rate (all (B,))."""

    t_dec: np.ndarray  # an iteration without prompt tokens
    rho_pf: np.ndarray  # share of GPU time on prompt tokens
    mean: np.ndarray
    var: np.ndarray
    m3: np.ndarray  # third central moment


def _iterations(
    x: np.ndarray, b: _Batch, k: _Coeffs, isl: np.ndarray, isl_m: tuple[np.ndarray, np.ndarray]
) -> _Iterations:
    """An iteration carries the prompts that arrived during the one before: T = t_dec + pf *
    tokens, the tokens compound Poisson at rate x over a mean iteration (size moments isl_m =
    E[isl^2], E[isl^3], as routed), so mean t_dec / (1 - rho_pf), variance pf^2 x E[T] E[isl^2]
    and third central moment pf^3 x E[T] E[isl^3]; the window is the previous iteration
    itself, which amplifies them by 1 / (1 - rho^2) and 1 / (1 - rho^3)."""
    t_dec = k.base_s + b.dec_s * b.c_avg
    rho = np.minimum(k.pf_s * x * isl, _RHO_PF_MAX)
    mean = t_dec / (1.0 - rho)
    pf_lam = k.pf_s * x * mean
    var = pf_lam * k.pf_s * isl_m[0] / (1.0 - rho * rho)
    m3 = pf_lam * np.square(k.pf_s) * isl_m[1] / (1.0 - rho * rho * rho)
    return _Iterations(t_dec, rho, mean, var, m3)


def _service_lognormal(
    x: np.ndarray, it: _Iterations, k: _Coeffs, isl_m: tuple[np.ndarray, np.ndarray],
    own_mean: np.ndarray, own_var: np.ndarray, route: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(mu, sigma) of the TTFT's GPU part as one lognormal with its exact mean and variance
    (Fenton-Wilkinson): the rest of the iteration L in progress at arrival (length-biased:
    E[L] = E[T^2] / E[T], E[L^2] = E[T^3] / E[T]; least-outstanding routing steers arrivals
    away from a replica busy with a long prefill, which `route` = 1 / sqrt(n) scales) + the
    next one, carrying the prompts that arrived during L and the request's own. Given L the
    wait has mean t_dec + (1/2 + rho_pf) L and variance L^2 / 12 + pf^2 x L E[isl^2]."""
    inv_mean = 1.0 / it.mean
    l1 = it.mean + it.var * route * inv_mean
    l2 = np.square(it.mean) + (3.0 * it.var + it.m3 * inv_mean) * route
    kk = 0.5 + it.rho_pf
    mean = it.t_dec + kk * l1 + own_mean
    var = l2 / 12.0 + np.square(k.pf_s) * x * l1 * isl_m[0] + kk * kk * (l2 - l1 * l1) + own_var
    sig2 = np.log1p(np.maximum(var, 0.0) / np.square(mean))
    return np.log(mean) - 0.5 * sig2, np.sqrt(sig2)


class _BatchSpread(NamedTuple):
    """How far the batch wanders from its mean (per replica, all (B,))."""

    sd_c: np.ndarray  # standard deviation of the batch size
    p_full: np.ndarray  # probability that the batch slots are full (a new request waits)
    full_wait_s: np.ndarray  # mean wait of a request that finds them full


def _batch_spread(
    x: np.ndarray,
    b: _Batch,
    it: _Iterations,
    n: np.ndarray,
    route: np.ndarray,
    curve: _ServiceCurve,
    arrival_scv: float | np.ndarray,
    dt_s: float,
) -> _BatchSpread:
    """Diffusion reading of the batch: it relaxes toward its mean at rate mu'(c) = s0 / S(c)^2,
    driven by arrivals, so sd(c)^2 = x / mu'(c) per replica, more by (1 + rho_pf) as prefill
    bursts move everyone's residence, less over sqrt(n) replicas (least-outstanding routing
    spreads each burst). Past the knee the fleet's backlog is exponential with rate
    2 (1 - u) / (1 + u scv) per request at load u = x / mu_max, but within one interval it
    strays at most sqrt(scv x n dt) requests. A request waits when the batch sits at the knee:
    the mass of that tail, the Gaussian's density at the knee over the backlog's rate."""
    s = curve.s0 + curve.s1 * b.c_avg
    var_c = ((0.5 + 0.5 * arrival_scv) * route) * (1.0 + it.rho_pf) * x * s * s / curve.s0
    sd = np.sqrt(var_c + 1e-12)
    u = np.minimum(x / curve.mu_max, 0.999)
    n_dt = n * (arrival_scv * dt_s)
    theta = np.maximum(2.0 * (1.0 - u) / (1.0 + u * arrival_scv), (x * n_dt + 1.0) ** -0.5)
    # mu(c) is concave, so a wandering batch sits s1 var / S above the fluid's to keep up
    z = np.maximum(curve.c_max - b.c_avg - curve.s1 * var_c / s, 0.0) / sd
    tail = np.exp(-0.5 * z * z) * (0.3989422804014327 / (sd * theta * n))
    p_full = (b.queue_end < 0.5) * (tail / (1.0 + tail))  # a real backlog carries the wait
    return _BatchSpread(sd, p_full, 1.0 / (theta * n * curve.mu_max))


def _backlog_wait(
    queue: np.ndarray, queue_end: np.ndarray, inv_drain: np.ndarray, timeout_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Backlog wait (s): it ramps linearly from the start to the end of the interval at the
    knee drain rate (with nothing ready, a waiting request waits out the timeout), so its
    quantile at p is w_lo + span * p. Returns (w_lo, span)."""
    w0 = np.minimum(queue * inv_drain, timeout_s)
    w1 = np.minimum(queue_end * inv_drain, timeout_s)
    return np.minimum(w0, w1), np.abs(w1 - w0)


_RAMP_DEV2 = np.square(P_GRID - 0.5)[None, :]
_LN2 = float(np.log(2.0))


def _ttft_q(
    service: tuple[np.ndarray, np.ndarray],
    base_s: np.ndarray,
    spread: _BatchSpread,
    backlog: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """(B, P) TTFT quantiles: prefill_base + the service part (lognormal) + the slot wait (none
    with probability 1 - p_full, else exponential) + the backlog ramp, combined around their
    medians: the sum of the medians plus (above) or minus (below) the root-sum-square of each
    part's distance from its median, floored at 0 (monotone, as every part is)."""
    mu, sig = service
    med = base_s + np.exp(mu)
    svc_dev = np.exp(mu[:, None] + sig[:, None] * _Z_GRID[None, :]) - (med - base_s)[:, None]
    dev2 = svc_dev * svc_dev
    # the slot wait and the backlog only where some cluster has them (at light load none does)
    if spread.p_full.max(initial=0.0) > 1e-4:  # below: none of the grid's tail reaches it
        log_pw = np.log(spread.p_full + 1e-300)
        slot50 = spread.full_wait_s * np.maximum(log_pw + _LN2, 0.0)
        slot_dev = spread.full_wait_s[:, None] * np.maximum(log_pw[:, None] + _NEG_LOG_TAIL, 0.0)
        slot_dev -= slot50[:, None]
        dev2 += slot_dev * slot_dev
        med += slot50
    w_lo, span = backlog
    if w_lo.max(initial=0.0) > 0.0 or span.max(initial=0.0) > 0.0:
        dev2 += np.square(span)[:, None] * _RAMP_DEV2
        med += w_lo + 0.5 * span
    return np.maximum(med[:, None] + _SIGN * np.sqrt(dev2), 0.0)


_DP = np.diff(P_GRID)


def _share_within(quantiles: np.ndarray, slo_s: float) -> np.ndarray:
    """(B,) probability that a value is <= slo_s: the CDF linear between the monotone (B, P)
    quantiles, i.e. each grid cell's mass times the share of its span below slo_s."""
    lo = quantiles[:, :-1]
    span = np.maximum(quantiles[:, 1:] - lo, 1e-12)
    return np.minimum(np.maximum((slo_s - lo) / span, 0.0), 1.0) @ _DP


def _share_within_class(
    ttft_q: np.ndarray,
    base_s: float,
    per_1k_s: float,
    prompt_tokens: np.ndarray,
    prompt_cv: float | np.ndarray,
    own_s: np.ndarray,
) -> np.ndarray:
    """(B,) share of requests within a per-length TTFT target base_s + per_1k_s * isl / 1000
    (`rlscale.slo.SLOClass`); exactly `_share_within(ttft_q, base_s)` when flat.

    The interval's TTFT is one distribution over its requests, not one per prompt length, so
    how a request's TTFT goes with its own prompt is a copula between the two: a mixture of
    - comonotone: the TTFT quantile at p meets the target of the prompt quantile at p (long
      prompts wait longest and have the largest targets; exact where the own prefill orders the
      TTFTs, an idle replica), and
    - independent: every TTFT against every prompt's target (a short prompt stuck behind a
      burst or a long prefill fares as a long one: the waiting does not know the length),
    weighted by the share of the TTFT's spread that is the request's own prefill (its 5-95 %
    range, own_s = GPU time of the mean prompt, lognormal prompts with this CV, over the TTFT's).
    A convex mix of two copulas is one, and its rank correlation is the weight. Prompts are
    lognormal with this CV; between grid points the slack TTFT - target (comonotone) and the
    CDF (independent) are linear, as in `_share_within`. Against the request-level engine on
    70B with 10x Azure conv prompts: `benchmarks/results/slo_classes.md`."""
    if per_1k_s == 0.0:
        return _share_within(ttft_q, base_s)
    cv = np.broadcast_to(np.asarray(prompt_cv, dtype=np.float64), np.shape(prompt_tokens))
    s2 = np.log1p(np.square(cv))
    rel = np.exp(np.sqrt(s2)[:, None] * _Z_GRID[None, :] - 0.5 * s2[:, None])
    target = base_s + (per_1k_s / 1000.0) * (prompt_tokens[:, None] * rel)
    lo_q = ttft_q[:, :-1]
    span = np.maximum(ttft_q[:, 1:] - lo_q, 1e-12)
    # independent: the TTFT's CDF at each prompt quantile's target, trapezoid over the cells
    cdf = np.stack(
        [
            np.minimum(np.maximum((target[:, k, None] - lo_q) / span, 0.0), 1.0) @ _DP
            for k in range(len(P_GRID))
        ],
        axis=1,
    )
    indep = (0.5 * (cdf[:, :-1] + cdf[:, 1:])) @ _DP
    # comonotone: the share of each cell where the (linear) slack TTFT - target is <= 0
    slack = ttft_q - target
    lo, hi = slack[:, :-1], slack[:, 1:]
    d = hi - lo
    t0 = -lo / np.where(np.abs(d) > 1e-12, d, 1.0)  # where the slack crosses 0 in the cell
    frac = np.where(
        d > 1e-12,
        np.minimum(np.maximum(t0, 0.0), 1.0),
        np.where(d < -1e-12, np.minimum(np.maximum(1.0 - t0, 0.0), 1.0), (lo <= 0.0) * 1.0),
    )
    como = frac @ _DP
    own_range = own_s * (rel[:, _P95] - rel[:, _P05])
    weight = np.minimum(own_range / np.maximum(ttft_q[:, _P95] - ttft_q[:, _P05], 1e-12), 1.0)
    return indep + weight * (como - indep)


def _tpot(
    it: _Iterations,
    b: _Batch,
    spread: _BatchSpread,
    output_tokens: np.ndarray,
    output_cv: float | np.ndarray,
    slo_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """TPOT = the mean iteration over a request's decode: lognormal around E[T], its variance
    Var[T] averaged over osl iterations (E[1/osl] = (1 + cv^2) / osl) plus the batch's own
    wandering (`_batch_spread`). Returns the (B, P) quantiles and the (B,) share within slo_s."""
    var = it.var * (1.0 + np.square(output_cv)) / output_tokens
    var += np.square(b.dec_s * spread.sd_c / (1.0 - it.rho_pf))
    sig2 = np.log1p(var / np.square(it.mean))
    sig = np.sqrt(sig2)
    mu = np.log(it.mean) - 0.5 * sig2
    tpot_q = np.exp(mu[:, None] + sig[:, None] * _Z_GRID[None, :])
    return tpot_q, ndtr((np.log(slo_s) - mu) / (sig + 1e-9))


def _routed_size_moments(
    prompt_tokens: np.ndarray, prompt_cv: float | np.ndarray, count_scv: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """E[isl^2], E[isl^3] of the prompt tokens a replica's iteration collects, for a lognormal
    length with this CV: compound in the sizes, and in the counts only by count_scv (least-
    outstanding routing deals arrivals out in turn: per replica their counts vary as
    arrival_scv / n, the sizes as they are)."""
    g = 1.0 + np.square(prompt_cv)
    isl2 = np.square(prompt_tokens)
    return isl2 * (g - 1.0 + count_scv), isl2 * prompt_tokens * (g * g * g - 1.0 + count_scv)


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
    output_cv: float | np.ndarray = 1.0,
    arrival_scv: float | np.ndarray = 1.0,
    timeout_s: float = 120.0,
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
    tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
    running_prompt_tokens: np.ndarray | None = None,
    running_output_tokens: np.ndarray | None = None,
    ttft_slo_s_per_1k_tokens: float = 0.0,
) -> ServeResult:
    """Serve one interval. `running_*_tokens` are the mean sizes of the requests in flight (the
    previous result's; default: this bin's). The TTFT SLO is `ttft_slo_s` plus
    `ttft_slo_s_per_1k_tokens` per 1,000 prompt tokens (`_share_within_class`). Conservation holds exactly per cluster:
    queue + arrivals = started + queue_end + dropped and running + started = completed + running_end.
    """
    ready = np.asarray(ready, dtype=np.float64)
    has_ready = ready > 0
    inv_ready = has_ready / np.maximum(ready, 1e-12)  # 0 where nothing is ready
    n = np.maximum(ready, 1.0)
    k = _Coeffs.of(lat)
    curve = _service_curve(k, prompt_tokens, output_tokens)
    if running_prompt_tokens is None or running_output_tokens is None:
        mix0, run_isl, run_osl = curve, prompt_tokens, output_tokens
    else:
        run_isl, run_osl = running_prompt_tokens, running_output_tokens
        mix0 = _service_curve(k, run_isl, run_osl)
    b, new_share = _run_batch(
        queue, running, arrivals, ready, inv_ready, mix0, curve, k, prompt_tokens, dt_s
    )
    drain_rps = ready * curve.mu_max
    # Clients give up after timeout_s: the queue holds at most timeout_s of drain (or arrivals
    # when nothing drains).
    dropped = np.maximum(b.queue_end - np.maximum(drain_rps, arrivals / dt_s) * timeout_s, 0.0)
    queue_end = b.queue_end - dropped
    inv_drain = np.where(has_ready, inv_ready / curve.mu_max, 1e12)

    x = b.started * inv_ready / dt_s
    isl_m = _routed_size_moments(prompt_tokens, prompt_cv, arrival_scv / n)
    it = _iterations(x, b, k, prompt_tokens, isl_m)
    route = 1.0 / np.sqrt(n)
    spread = _batch_spread(x, b, it, n, route, curve, arrival_scv, dt_s)
    own_var = np.square(curve.own_s * prompt_cv)
    ttft_q = _ttft_q(
        _service_lognormal(x, it, k, isl_m, curve.own_s, own_var, route),
        k.overhead_s,
        spread,
        _backlog_wait(queue, queue_end + dropped, inv_drain, timeout_s),
    )
    tpot_q, p_tpot = _tpot(it, b, spread, output_tokens, output_cv, tpot_slo_s)
    c_end = b.running_end * inv_ready
    run_isl = _mix(run_isl, prompt_tokens, new_share)
    run_osl = _mix(run_osl, output_tokens, new_share)

    return ServeResult(
        started=b.started,
        completed=b.completed,
        dropped=dropped,
        queue=queue_end,
        running=b.running_end,
        concurrency=c_end,
        kv_cache_usage=np.minimum(c_end * (run_isl + 0.5 * run_osl) / k.kv_tokens, 1.0),
        gpu_utilization_pct=100.0 * (1.0 - np.exp(-c_end)),
        ttft_p50_s=ttft_q[:, _P50],
        ttft_p95_s=ttft_q[:, _P95],
        ttft_p99_s=ttft_q[:, _P99],
        tpot_p50_s=tpot_q[:, _P50],
        tpot_p95_s=tpot_q[:, _P95],
        tpot_p99_s=tpot_q[:, _P99],
        slo_ok=arrivals
        * _share_within_class(
            ttft_q, ttft_slo_s, ttft_slo_s_per_1k_tokens, prompt_tokens, prompt_cv, curve.own_s
        )
        * p_tpot,
        capacity_rps=drain_rps,
        ttft_q=ttft_q,
        tpot_q=tpot_q,
        running_prompt_tokens=run_isl,
        running_output_tokens=run_osl,
    )


def pooled_percentiles(
    quantiles: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]
) -> list[float]:
    """Percentiles (0..1) of a mixture of interval distributions, each given by its (P_GRID)
    quantiles `quantiles` (N, P) and linear between them, weighted by `weights` (N,) (its
    requests). Exact for that piecewise-linear reading (bisection on the mixture's CDF), where
    pooling each grid cell's midpoint reads a pooled p99 as (q95 + q99) / 2 of one interval."""
    q = np.asarray(quantiles, dtype=np.float64).reshape(-1, len(P_GRID))
    w = np.ravel(np.asarray(weights, dtype=np.float64))
    keep = w > 0
    if not keep.any():
        return [float("nan")] * len(qs)
    q, w = q[keep], w[keep] / w[keep].sum()
    out = []
    for p in qs:
        lo, hi = float(q[:, 0].min()), float(q[:, -1].max())
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if float(w @ _share_within(q, mid)) < p:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-6 * max(hi, 1e-3):
                break
        out.append(hi)
    return out


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
        ttft_slo_s_per_1k_tokens: float = 0.0,
    ) -> None:
        self.profile = profile
        self.lat = LatencyArrays.from_profile(profile, 1)
        self.queue = np.zeros(1)
        self.running = np.zeros(1)
        self.running_sizes: tuple[np.ndarray, np.ndarray] | None = None  # batch's size mix
        self._kw = dict(
            ttft_slo_s=ttft_slo_s,
            tpot_slo_s=tpot_slo_s,
            timeout_s=timeout_s,
            prompt_cv=prompt_cv,
            ttft_slo_s_per_1k_tokens=ttft_slo_s_per_1k_tokens,
        )

    def release(self, share: float) -> None:
        """A replica leaves holding `share` of the queue and of the batch: a terminating pod
        keeps the requests it holds (it drains them or they die with it); they do not move to
        the replicas that stay."""
        keep = min(max(1.0 - share, 0.0), 1.0)
        self.queue = self.queue * keep
        self.running = self.running * keep

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
            running_prompt_tokens=None if self.running_sizes is None else self.running_sizes[0],
            running_output_tokens=None if self.running_sizes is None else self.running_sizes[1],
            **self._kw,
        )
        self.queue, self.running = r.queue, r.running
        if r.running_prompt_tokens is not None and r.running_output_tokens is not None:
            self.running_sizes = (r.running_prompt_tokens, r.running_output_tokens)
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
