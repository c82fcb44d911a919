"""`serve_interval`'s fluid model as a scalar numba kernel, one cluster at a time: the fast path
`ClusterSim` steps through (B = 1 costs one call, not ~150 numpy calls on 1-element arrays).

`serving.model.serve_interval` (numpy) stays the reference and the spec: this file transcribes
it line by line, in the same order of floating-point operations, and
tests/serving/test_serve_kernel.py holds the two together over thousands of intervals (cold
fleets, backlogs, timeouts, overload). They differ only where the libraries do: numpy's SIMD
exp/log against libm's (1 ulp), scipy's ndtr against the erf/erfc below, and the order of the
SLO-share sum (numpy's matmul); the test bounds the difference (relative 1e-12).

The reference decides two TTFT terms batch-wide (the slot wait where some cluster's p_full >
1e-4, the backlog where some cluster has one); per cluster both are exactly 0 where that
cluster has none, so deciding them per cluster changes no number.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.serving import model as _model
from rlscale.serving.jit_cache import drop_stale
from rlscale.serving.model import (
    _DP,
    _LN2,
    _NEG_LOG_TAIL,
    _PREFILL_BUDGET,
    _RAMP_DEV2,
    _RHO_PF_MAX,
    _SIGN,
    _SUB_STEPS,
    _Z_GRID,
    P_GRID,
    LatencyArrays,
    ServeResult,
    grid_index,
)

# the kernels compile in serving.model's constants (`serving.jit_cache`)
drop_stale(__file__, _model.__file__)

# Rows of the (N_OUT, B) result matrix.
OUT_STARTED, OUT_COMPLETED, OUT_DROPPED, OUT_QUEUE, OUT_RUNNING = 0, 1, 2, 3, 4
OUT_CONCURRENCY, OUT_KV, OUT_GPU, OUT_SLO_OK, OUT_CAPACITY = 5, 6, 7, 8, 9
OUT_RUN_ISL, OUT_RUN_OSL = 10, 11
N_OUT = 12
# Rows of the (9, B) latency matrix: LatencyArrays' fields in declaration order.
LAT_FIELDS: tuple[str, ...] = (
    "tpot_base_ms",
    "tpot_ms_per_seq",
    "tpot_ms_per_seq_per_ktok",
    "tpot_ms_per_prefill_token",
    "prefill_base_ms",
    "prefill_ms_per_token",
    "prefill_interference",
    "kv_cache_tokens",
    "max_batch",
)
N_P = len(P_GRID)
Q50, Q95, Q99 = grid_index(0.5), grid_index(0.95), grid_index(0.99)  # P_GRID columns
Q05 = grid_index(0.05)
# numba freezes module-level arrays into the compiled code as constants
_ZG = np.ascontiguousarray(_Z_GRID, dtype=np.float64)
_SG = np.ascontiguousarray(_SIGN[0], dtype=np.float64)
_NLT = np.ascontiguousarray(_NEG_LOG_TAIL[0], dtype=np.float64)
_RD2 = np.ascontiguousarray(_RAMP_DEV2[0], dtype=np.float64)
_DPG = np.ascontiguousarray(_DP, dtype=np.float64)
_SQRT1_2 = 0.707106781186547524400844362104849039


@njit(cache=True, inline="always")
def _ndtr(a: float) -> float:
    """Standard normal CDF as cephes (scipy.special.ndtr) computes it."""
    if math.isnan(a):
        return a
    x = a * _SQRT1_2
    z = abs(x)
    if z < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(z)
    return 1.0 - y if x > 0 else y


@njit(cache=True)
def serve_row(
    i: int,
    queue: float,
    running: float,
    ready: float,
    arrivals: float,
    isl: float,
    osl: float,
    run_isl: float,
    run_osl: float,
    prompt_cv: float,
    output_cv: float,
    arrival_scv: float,
    dt_s: float,
    timeout_s: float,
    ttft_slo_s: float,
    tpot_slo_s: float,
    ttft_slo_s_per_1k: float,
    lat: np.ndarray,
    out: np.ndarray,
    ttft_q: np.ndarray,
    tpot_q: np.ndarray,
) -> None:
    """One cluster's interval (column i of `lat`, `out`; row i of the quantile grids)."""
    # _Coeffs.of
    base_s = lat[0, i] / 1e3
    seq_s = lat[1, i] / 1e3
    kv_tok_s = lat[2, i] / 1e6
    pf_s = lat[3, i] / 1e3
    overhead_s = lat[4, i] / 1e3
    kv_tokens = lat[7, i]
    max_batch = lat[8, i]

    has_ready = 1.0 if ready > 0 else 0.0
    inv_ready = has_ready / max(ready, 1e-12)
    n = max(ready, 1.0)

    # _service_curve of this bin's sizes and of the mix in flight
    ctx = isl + 0.5 * osl
    c_max = min(max_batch, kv_tokens / ctx)
    dec_s = seq_s + kv_tok_s * ctx
    own_s = pf_s * isl
    s0 = overhead_s + own_s + osl * base_s
    s1_dec = osl * dec_s
    s1 = s1_dec + own_s
    mu_max = c_max / (s0 + s1 * c_max)
    m_ctx = run_isl + 0.5 * run_osl
    m_c_max = min(max_batch, kv_tokens / m_ctx)
    m_dec_s = seq_s + kv_tok_s * m_ctx
    m_own_s = pf_s * run_isl
    m_s0 = overhead_s + m_own_s + run_osl * base_s
    m_s1_dec = run_osl * m_dec_s
    m_s1 = m_s1_dec + m_own_s

    # _run_batch
    h = dt_s / _SUB_STEPS
    c0 = running * inv_ready
    s_old = m_s0 + m_s1 * c0
    turnover = -h / s_old
    share = -math.expm1(0.5 * _SUB_STEPS * turnover)
    b_dec_s = m_dec_s + (dec_s - m_dec_s) * share
    r_max = ready * min(m_c_max, c_max)
    a_cap = (ready * (h * _PREFILL_BUDGET)) / (
        (base_s + pf_s * _PREFILL_BUDGET + b_dec_s * c0) * isl
    )
    arr_h = arrivals / _SUB_STEPS
    own_per_h = own_s * inv_ready / h
    one_m_rho = 1.0 - min(m_own_s * c0 / s_old, _RHO_PF_MAX)
    q = queue
    r = running
    started = 0.0
    c_sum = 0.0
    for j in range(_SUB_STEPS):
        if j == 0:
            s0_j = m_s0
            s1_j = m_s1_dec
        else:
            share_j = share if 2 * j == _SUB_STEPS else -math.expm1(j * turnover)
            s0_j = m_s0 + (s0 - m_s0) * share_j
            s1_j = m_s1_dec + (s1_dec - m_s1_dec) * share_j
        h_s = one_m_rho * h / (s0_j + s1_j * (r * inv_ready))
        want = q + arr_h
        a = min(want, a_cap)
        a_s = a / h_s
        r_free = a_s + (r - a_s) * math.exp(-h_s)
        done = min(r + a - r_free, (0.5 * (r + r_max)) * h_s)
        adm = min(max(r_max - r + done, 0.0), a)
        r_h = r + adm - done
        q = want - adm
        if j + 1 < _SUB_STEPS:
            one_m_rho = 1.0 - min(own_per_h * adm, _RHO_PF_MAX)
        c_sum = c_sum + (r + r_h)
        started = started + adm
        r = r_h
    new_share = min(started / max(running + started, 1e-12), 1.0)
    completed = running + started - r
    queue_b = q
    c_avg = c_sum * (0.5 / _SUB_STEPS) * inv_ready

    # drops and the drain rate
    drain_rps = ready * mu_max
    dropped = max(queue_b - max(drain_rps, arrivals / dt_s) * timeout_s, 0.0)
    queue_end = queue_b - dropped
    inv_drain = inv_ready / mu_max if ready > 0 else 1e12

    x = started * inv_ready / dt_s
    # _routed_size_moments
    count_scv = arrival_scv / n
    g = 1.0 + prompt_cv * prompt_cv
    isl2 = isl * isl
    isl_m2 = isl2 * (g - 1.0 + count_scv)
    isl_m3 = isl2 * isl * (g * g * g - 1.0 + count_scv)
    # _iterations
    t_dec = base_s + b_dec_s * c_avg
    rho = min(pf_s * x * isl, _RHO_PF_MAX)
    it_mean = t_dec / (1.0 - rho)
    pf_lam = pf_s * x * it_mean
    it_var = pf_lam * pf_s * isl_m2 / (1.0 - rho * rho)
    it_m3 = pf_lam * (pf_s * pf_s) * isl_m3 / (1.0 - rho * rho * rho)
    route = 1.0 / math.sqrt(n)
    # _batch_spread
    s = s0 + s1 * c_avg
    var_c = ((0.5 + 0.5 * arrival_scv) * route) * (1.0 + rho) * x * s * s / s0
    sd = math.sqrt(var_c + 1e-12)
    u = min(x / mu_max, 0.999)
    n_dt = n * (arrival_scv * dt_s)
    theta = max(2.0 * (1.0 - u) / (1.0 + u * arrival_scv), (x * n_dt + 1.0) ** -0.5)
    z = max(c_max - c_avg - s1 * var_c / s, 0.0) / sd
    tail = math.exp(-0.5 * z * z) * (0.3989422804014327 / (sd * theta * n))
    p_full = (1.0 if queue_b < 0.5 else 0.0) * (tail / (1.0 + tail))
    full_wait_s = 1.0 / (theta * n * mu_max)
    # _service_lognormal
    own_var = (own_s * prompt_cv) * (own_s * prompt_cv)
    inv_mean = 1.0 / it_mean
    l1 = it_mean + it_var * route * inv_mean
    l2 = it_mean * it_mean + (3.0 * it_var + it_m3 * inv_mean) * route
    kk = 0.5 + rho
    w_mean = t_dec + kk * l1 + own_s
    w_var = l2 / 12.0 + (pf_s * pf_s) * x * l1 * isl_m2 + kk * kk * (l2 - l1 * l1) + own_var
    sig2 = math.log1p(max(w_var, 0.0) / (w_mean * w_mean))
    mu = math.log(w_mean) - 0.5 * sig2
    sig = math.sqrt(sig2)
    # _backlog_wait (with the queue before drops, as the reference passes it)
    w0 = min(queue * inv_drain, timeout_s)
    w1 = min((queue_end + dropped) * inv_drain, timeout_s)
    w_lo = min(w0, w1)
    span = abs(w1 - w0)
    # _ttft_q
    med = overhead_s + math.exp(mu)
    svc_med = med - overhead_s
    slot = p_full > 1e-4
    log_pw = 0.0
    slot50 = 0.0
    if slot:
        log_pw = math.log(p_full + 1e-300)
        slot50 = full_wait_s * max(log_pw + _LN2, 0.0)
        med += slot50
    ramp = w_lo > 0.0 or span > 0.0
    if ramp:
        med += w_lo + 0.5 * span
    for p in range(N_P):
        d = math.exp(mu + sig * _ZG[p]) - svc_med
        dev2 = d * d
        if slot:
            sd_p = full_wait_s * max(log_pw + _NLT[p], 0.0)
            sd_p -= slot50
            dev2 += sd_p * sd_p
        if ramp:
            dev2 += (span * span) * _RD2[p]
        ttft_q[i, p] = max(med + _SG[p] * math.sqrt(dev2), 0.0)
    # _tpot
    t_var = it_var * (1.0 + output_cv * output_cv) / osl
    spread_t = b_dec_s * sd / (1.0 - rho)
    t_var += spread_t * spread_t
    t_sig2 = math.log1p(t_var / (it_mean * it_mean))
    t_sig = math.sqrt(t_sig2)
    t_mu = math.log(it_mean) - 0.5 * t_sig2
    for p in range(N_P):
        tpot_q[i, p] = math.exp(t_mu + t_sig * _ZG[p])
    p_tpot = _ndtr((math.log(tpot_slo_s) - t_mu) / (t_sig + 1e-9))
    within = 0.0
    if ttft_slo_s_per_1k == 0.0:
        # _share_within(ttft_q, ttft_slo_s)
        for p in range(N_P - 1):
            lo = ttft_q[i, p]
            cell = max(ttft_q[i, p + 1] - lo, 1e-12)
            within += min(max((ttft_slo_s - lo) / cell, 0.0), 1.0) * _DPG[p]
    else:
        # _share_within_class: a mix of the comonotone and the independent copula
        c_s2 = math.log1p(prompt_cv * prompt_cv)
        c_sg = math.sqrt(c_s2)
        per_tok = ttft_slo_s_per_1k / 1000.0
        rel = np.empty(N_P)
        tgt = np.empty(N_P)
        cdf = np.empty(N_P)
        for k in range(N_P):
            rel[k] = math.exp(c_sg * _ZG[k] - 0.5 * c_s2)
            tgt[k] = ttft_slo_s + per_tok * (isl * rel[k])
        for k in range(N_P):
            acc = 0.0
            for p in range(N_P - 1):
                lo = ttft_q[i, p]
                cell = max(ttft_q[i, p + 1] - lo, 1e-12)
                acc += min(max((tgt[k] - lo) / cell, 0.0), 1.0) * _DPG[p]
            cdf[k] = acc
        indep = 0.0
        como = 0.0
        for p in range(N_P - 1):
            indep += (0.5 * (cdf[p] + cdf[p + 1])) * _DPG[p]
            lo = ttft_q[i, p] - tgt[p]
            d = (ttft_q[i, p + 1] - tgt[p + 1]) - lo
            if d > 1e-12:
                frac = min(max(-lo / d, 0.0), 1.0)
            elif d < -1e-12:
                frac = min(max(1.0 - -lo / d, 0.0), 1.0)
            else:
                frac = 1.0 if lo <= 0.0 else 0.0
            como += frac * _DPG[p]
        own_range = own_s * (rel[Q95] - rel[Q05])
        weight = min(own_range / max(ttft_q[i, Q95] - ttft_q[i, Q05], 1e-12), 1.0)
        within = indep + weight * (como - indep)

    c_end = r * inv_ready
    m_isl = run_isl + (isl - run_isl) * new_share
    m_osl = run_osl + (osl - run_osl) * new_share
    out[OUT_STARTED, i] = started
    out[OUT_COMPLETED, i] = completed
    out[OUT_DROPPED, i] = dropped
    out[OUT_QUEUE, i] = queue_end
    out[OUT_RUNNING, i] = r
    out[OUT_CONCURRENCY, i] = c_end
    out[OUT_KV, i] = min(c_end * (m_isl + 0.5 * m_osl) / kv_tokens, 1.0)
    out[OUT_GPU, i] = 100.0 * (1.0 - math.exp(-c_end))
    out[OUT_SLO_OK, i] = arrivals * within * p_tpot
    out[OUT_CAPACITY, i] = drain_rps
    out[OUT_RUN_ISL, i] = m_isl
    out[OUT_RUN_OSL, i] = m_osl


@njit(cache=True)
def serve_rows(
    queue: np.ndarray,
    running: np.ndarray,
    ready: np.ndarray,
    arrivals: np.ndarray,
    isl: np.ndarray,
    osl: np.ndarray,
    run_isl: np.ndarray,
    run_osl: np.ndarray,
    prompt_cv: np.ndarray,
    output_cv: np.ndarray,
    arrival_scv: np.ndarray,
    scalars: np.ndarray,
    lat: np.ndarray,
    out: np.ndarray,
    ttft_q: np.ndarray,
    tpot_q: np.ndarray,
) -> None:
    """`serve_row` for every cluster; scalars = (dt_s, timeout_s, ttft_slo_s, tpot_slo_s,
    ttft_slo_s_per_1k_tokens)."""
    for i in range(queue.shape[0]):
        serve_row(
            i, queue[i], running[i], ready[i], arrivals[i], isl[i], osl[i], run_isl[i],
            run_osl[i], prompt_cv[i], output_cv[i], arrival_scv[i], scalars[0], scalars[1],
            scalars[2], scalars[3], scalars[4], lat, out, ttft_q, tpot_q,
        )  # fmt: skip


def lat_matrix(lat: LatencyArrays) -> np.ndarray:
    """(9, B) matrix of a LatencyArrays' fields (rows in LAT_FIELDS order)."""
    return np.ascontiguousarray(np.stack([getattr(lat, f) for f in LAT_FIELDS]), dtype=np.float64)


def result_of(out: np.ndarray, ttft_q: np.ndarray, tpot_q: np.ndarray) -> ServeResult:
    """The ServeResult a kernel's buffers hold (views, no copies)."""
    return ServeResult(
        started=out[OUT_STARTED],
        completed=out[OUT_COMPLETED],
        dropped=out[OUT_DROPPED],
        queue=out[OUT_QUEUE],
        running=out[OUT_RUNNING],
        concurrency=out[OUT_CONCURRENCY],
        kv_cache_usage=out[OUT_KV],
        gpu_utilization_pct=out[OUT_GPU],
        ttft_p50_s=ttft_q[:, Q50],
        ttft_p95_s=ttft_q[:, Q95],
        ttft_p99_s=ttft_q[:, Q99],
        tpot_p50_s=tpot_q[:, Q50],
        tpot_p95_s=tpot_q[:, Q95],
        tpot_p99_s=tpot_q[:, Q99],
        slo_ok=out[OUT_SLO_OK],
        capacity_rps=out[OUT_CAPACITY],
        ttft_q=ttft_q,
        tpot_q=tpot_q,
        running_prompt_tokens=out[OUT_RUN_ISL],
        running_output_tokens=out[OUT_RUN_OSL],
    )


def _col(value: float | np.ndarray, batch: int) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=np.float64), (batch,)))


def serve_interval_fast(
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
    """`serving.model.serve_interval`, same arguments and result, through the kernel."""
    b = np.shape(queue)[0]
    isl, osl = _col(prompt_tokens, b), _col(output_tokens, b)
    run_isl = isl if running_prompt_tokens is None else _col(running_prompt_tokens, b)
    run_osl = osl if running_output_tokens is None else _col(running_output_tokens, b)
    out = np.empty((N_OUT, b))
    ttft_q, tpot_q = np.empty((b, N_P)), np.empty((b, N_P))
    serve_rows(
        _col(queue, b), _col(running, b), _col(ready, b), _col(arrivals, b), isl, osl, run_isl,
        run_osl, _col(prompt_cv, b), _col(output_cv, b), _col(arrival_scv, b),
        np.array(
            [dt_s, timeout_s, ttft_slo_s, tpot_slo_s, ttft_slo_s_per_1k_tokens], dtype=np.float64
        ),
        lat_matrix(lat),
        out, ttft_q, tpot_q,
    )  # fmt: skip
    return result_of(out, ttft_q, tpot_q)
