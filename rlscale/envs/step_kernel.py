"""The environment's hot path as numba kernels: the action map (`contract.ActionSpec.decode`), the
encoder (`contract.encode_raw`), and the window shift and reward of `AutoscaleCore.step`.

Scalar transcriptions of the numpy contract, operation for operation (same order of additions,
numpy's pairwise summation, its NaN rules for maximum / minimum / nan_to_num), so the contract
keeps one definition: the numpy code is the reference, `AutoscaleCore(engine="numpy")` runs it,
and tests/envs/test_step_kernel.py holds these kernels to it exactly (observations, targets,
rewards). The only difference is transcendental: log2 / log1p here are libm's, numpy's are its
SIMD ones, which can differ in the last bit of a float64; the observation is float32, so it reads
the same.

Why: at B = 1 the numpy encoder and action map cost ~40 numpy calls a step (~90 % of a
Gymnasium step); here they are two kernel calls.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from rlscale import contract as _contract
from rlscale.contract import (
    FEATURES_PER_STEP,
    FIELD_INDEX,
    MIX_FEATURES,
    SLO_GRID_OUTPUT_LOG2,
    SLO_GRID_PROMPT_LOG2,
    ActionSpec,
    ObservationSpec,
    _knee_rps,
    _slo_share,
)
from rlscale.serving.jit_cache import drop_stale

# the kernels compile in the contract's layout and grids (`serving.jit_cache`)
drop_stale(__file__, _contract.__file__)

_I = FIELD_INDEX
T_S = _I["time_s"]
DT = _I["interval_s"]
ARR = _I["arrival_rps"]
P_TPS = _I["prompt_tokens_per_s"]
O_TPS = _I["output_tokens_per_s"]
WAIT = _I["requests_waiting"]
RUN = _I["requests_running"]
KV = _I["kv_cache_usage"]
GPU = _I["gpu_utilization_pct"]
TTFT95 = _I["ttft_p95_s"]
TPOT95 = _I["tpot_p95_s"]
DESIRED = _I["replicas_desired"]
READY = _I["replicas_ready"]
STARTING = _I["replicas_starting"]
WARM = _I["replicas_warm"]

# The layout the kernels write, feature by feature; `AutoscaleCore` refuses the kernels when the
# contract's differs (a feature added to the contract must be added here too).
STEP_FEATURES: tuple[str, ...] = (
    "demand_per_provisioned_replica",
    "demand_per_ready_replica",
    "queue_per_ready_replica",
    "running_per_ready_replica",
    "kv_cache_usage",
    "gpu_utilization",
    "ttft_p95_over_slo",
    "tpot_p95_over_slo",
    "starting_share",
    "warm_share",
    "fleet_fraction",
)
WINDOW_FEATURES: tuple[str, ...] = (
    "log2_prompt_tokens_over_ref",
    "log2_output_tokens_over_ref",
    "prefill_token_share",
)


def layout_mismatch() -> str | None:
    """None when the kernels encode the contract's features; else what differs."""
    if FEATURES_PER_STEP != STEP_FEATURES or MIX_FEATURES != WINDOW_FEATURES:
        return (
            f"contract features {FEATURES_PER_STEP + MIX_FEATURES}, the step kernels encode "
            f"{STEP_FEATURES + WINDOW_FEATURES}: update rlscale/envs/step_kernel.py"
        )
    return None


_GP = np.asarray(SLO_GRID_PROMPT_LOG2, dtype=np.float64)
_GO = np.asarray(SLO_GRID_OUTPUT_LOG2, dtype=np.float64)
_DBL_MAX = float(np.finfo(np.float64).max)
_DAY_S = 86_400.0
_MIX_RANGE = 64.0
_MIN_REQUESTS_FOR_MIX = 1.0
# the window is summed by numpy's pairwise rule, transcribed below up to this many terms
_MAX_SUM = 128

# packed ObservationSpec (`spec_params`)
P_CAP, P_MAX_BATCH, P_TTFT_SLO, P_TPOT_SLO, P_MAX_REPLICAS = 0, 1, 2, 3, 4
P_REF_PROMPT, P_REF_OUTPUT, P_IT, P_SEQ_IT, P_CTX_IT, P_PROMPT_S, P_OVERHEAD, P_KV = range(5, 13)
P_HAS_MODEL, P_HAS_SHARE, P_REF_CAP, P_TABLE = 13, 14, 15, 16
# packed ActionSpec (`action_params`)
A_U_MIN, A_U_MAX, A_DRAIN, A_MAX_WARM, A_HOLD = range(5)


def spec_params(spec: ObservationSpec) -> np.ndarray:
    """The spec as one float64 vector; the reference request's capacity is computed here by the
    contract's own numpy functions (so the kernels divide by the very same number)."""
    has_model = spec.has_capacity_model
    ref_cap = 1.0
    if has_model:
        rp, ro = np.float64(spec.ref_prompt_tokens), np.float64(spec.ref_output_tokens)
        ref_cap = float(_knee_rps(spec, rp, ro) * _slo_share(spec, rp, ro))
    head = [
        spec.replica_capacity_rps,
        spec.max_batch,
        spec.ttft_slo_s,
        spec.tpot_slo_s,
        spec.max_replicas,
        spec.ref_prompt_tokens,
        spec.ref_output_tokens,
        spec.iteration_s,
        spec.seq_iteration_s,
        spec.ctx_token_iteration_s,
        spec.prompt_token_s,
        spec.request_overhead_s,
        spec.kv_cache_tokens,
        1.0 if has_model else 0.0,
        1.0 if spec.slo_share else 0.0,
        ref_cap,
    ]
    table = list(spec.slo_share) or [0.0] * (len(_GP) * len(_GO))
    return np.asarray(head + table, dtype=np.float64)


def action_params(spec: ActionSpec) -> np.ndarray:
    return np.array(
        [spec.u_min, spec.u_max, spec.drain_s, float(spec.max_warm), spec.hold_band],
        dtype=np.float64,
    )


def check_window(window: int) -> None:
    if window > _MAX_SUM:
        raise ValueError(f"window = {window}, the step kernels sum at most {_MAX_SUM} intervals")


@njit(cache=True, inline="always")
def _nan0(v: float) -> float:
    """np.nan_to_num: NaN -> 0, +-inf -> +-max float."""
    if v != v:
        return 0.0
    if v == math.inf:
        return _DBL_MAX
    if v == -math.inf:
        return -_DBL_MAX
    return v


@njit(cache=True, inline="always")
def _npmax(a: float, b: float) -> float:
    """np.maximum (NaN wins)."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


@njit(cache=True, inline="always")
def _npmin(a: float, b: float) -> float:
    if a != a or b != b:
        return math.nan
    return a if a <= b else b


@njit(cache=True, inline="always")
def _clip(v: float, lo: float, hi: float) -> float:
    return _npmin(_npmax(v, lo), hi)


@njit(cache=True)
def _pairwise(a: np.ndarray, n: int) -> float:
    """numpy's pairwise sum of a[:n] (n <= 128), the order `ndarray.sum` adds in."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
    r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
    stop = n - n % 8
    for i in range(8, stop, 8):
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(stop, n):
        res += a[i]
    return res


@njit(cache=True)
def _window_sum(w: np.ndarray, b: int, t0: int, col: int, scratch: np.ndarray) -> float:
    """sum over rows t0.. of nan_to_num(w[b, t, col]) * nan_to_num(w[b, t, interval_s])."""
    n = w.shape[1] - t0
    for k in range(n):
        scratch[k] = _nan0(w[b, t0 + k, col]) * _nan0(w[b, t0 + k, DT])
    return _pairwise(scratch, n)


@njit(cache=True, inline="always")
def _mean_size(tokens: float, n: float, ref: float) -> float:
    if n >= _MIN_REQUESTS_FOR_MIX and tokens > 0:
        return _clip(tokens / n, ref / _MIX_RANGE, ref * _MIX_RANGE)
    return ref


@njit(cache=True)
def _request_mix(w: np.ndarray, b: int, p: np.ndarray, scratch: np.ndarray) -> tuple[float, float]:
    """`contract.request_mix` of window b."""
    n_t = w.shape[1]
    has_model = p[P_HAS_MODEL] > 0
    ref_p = p[P_REF_PROMPT] if has_model else 1.0
    ref_o = p[P_REF_OUTPUT] if has_model else 1.0
    t0 = 1 if n_t > 1 else 0
    arrived = _window_sum(w, b, t0, ARR, scratch)
    if n_t > 1:
        d_wait = _nan0(w[b, n_t - 1, WAIT]) - _nan0(w[b, 0, WAIT])
        d_run = _nan0(w[b, n_t - 1, RUN]) - _nan0(w[b, 0, RUN])
    else:
        d_wait = d_run = 0.0
    prefilled = arrived - d_wait
    finished = prefilled - d_run
    p_tok = _window_sum(w, b, t0, P_TPS, scratch)
    o_tok = _window_sum(w, b, t0, O_TPS, scratch)
    return _mean_size(p_tok, prefilled, ref_p), _mean_size(o_tok, finished, ref_o)


@njit(cache=True, inline="always")
def _knee_concurrency(p: np.ndarray, isl: float, osl: float) -> float:
    if p[P_HAS_MODEL] <= 0:
        return p[P_MAX_BATCH]
    ctx = isl + 0.5 * osl
    return _npmin(p[P_MAX_BATCH], p[P_KV] / _npmax(ctx, 1.0))


@njit(cache=True, inline="always")
def _knee_rps_of(p: np.ndarray, isl: float, osl: float) -> float:
    ctx = isl + 0.5 * osl
    c = _knee_concurrency(p, isl, osl)
    own_s = p[P_PROMPT_S] * isl
    s0 = p[P_OVERHEAD] + own_s + osl * p[P_IT]
    s1 = osl * (p[P_SEQ_IT] + p[P_CTX_IT] * ctx) + own_s
    return c / _npmax(s0 + s1 * c, 1e-12)


@njit(cache=True, inline="always")
def _grid_cell(grid: np.ndarray, x: float) -> int:
    """np.clip(np.searchsorted(grid, x, side="right") - 1, 0, len(grid) - 2)."""
    k = 0
    for g in grid:
        if g <= x:
            k += 1
    k -= 1
    return min(max(k, 0), grid.shape[0] - 2)


@njit(cache=True)
def _slo_share_of(p: np.ndarray, isl: float, osl: float) -> float:
    if p[P_HAS_SHARE] <= 0:
        return 1.0
    gp, go = _GP, _GO
    n_o = go.shape[0]
    x = _clip(np.log2(isl / p[P_REF_PROMPT]), gp[0], gp[-1])
    y = _clip(np.log2(osl / p[P_REF_OUTPUT]), go[0], go[-1])
    i = _grid_cell(gp, x)
    j = _grid_cell(go, y)
    fx = (x - gp[i]) / (gp[i + 1] - gp[i])
    fy = (y - go[j]) / (go[j + 1] - go[j])
    t = P_TABLE
    return (
        p[t + i * n_o + j] * (1 - fx) * (1 - fy)
        + p[t + (i + 1) * n_o + j] * fx * (1 - fy)
        + p[t + i * n_o + j + 1] * (1 - fx) * fy
        + p[t + (i + 1) * n_o + j + 1] * fx * fy
    )


@njit(cache=True)
def _capacity_at_mix(p: np.ndarray, isl: float, osl: float) -> float:
    if p[P_HAS_MODEL] <= 0:
        return p[P_CAP]
    here = _knee_rps_of(p, isl, osl) * _slo_share_of(p, isl, osl)
    return p[P_CAP] * here / p[P_REF_CAP]


@njit(cache=True, inline="always")
def _feature(v: float) -> float:
    """nan_to_num(nan=0, posinf=10, neginf=0), then clip to [0, 10]."""
    if v != v or v == -math.inf:
        return 0.0
    if v == math.inf:
        return 10.0
    return min(max(v, 0.0), 10.0)


@njit(cache=True, inline="always")
def _box(v: float, lo: float, hi: float) -> float:
    """v rounded to float32 (the observation's type, as `encode_raw` casts last), then clipped
    to [lo, hi] in float32 (as the Gymnasium env's np.clip of that float32 array)."""
    return _clip(float(np.float32(v)), lo, hi)


@njit(cache=True)
def encode_rows(
    w: np.ndarray, p: np.ndarray, out: np.ndarray, scratch: np.ndarray, lo: float, hi: float
) -> None:
    """`contract.encode_raw` of windows w (B, W, N_FIELDS) into out[:, :obs_size] (float32),
    each value then clipped to [lo, hi] (the Gymnasium env's box; -inf, inf for none)."""
    n_t = w.shape[1]
    for b in range(w.shape[0]):
        isl, osl = _request_mix(w, b, p, scratch)
        cap = _capacity_at_mix(p, isl, osl)
        slots = _knee_concurrency(p, isl, osl)
        k = 0
        for t in range(n_t):
            ready = _npmax(w[b, t, READY], 1.0)
            prov = _npmax(w[b, t, READY] + w[b, t, STARTING] + w[b, t, WARM], 1.0)
            arr = w[b, t, ARR]
            feats = (
                arr / (cap * prov),
                arr / (cap * ready),
                w[b, t, WAIT] / (slots * ready),
                w[b, t, RUN] / (slots * ready),
                w[b, t, KV],
                w[b, t, GPU] / 100.0,
                np.log1p(w[b, t, TTFT95] / p[P_TTFT_SLO]),
                np.log1p(w[b, t, TPOT95] / p[P_TPOT_SLO]),
                w[b, t, STARTING] / prov,
                w[b, t, WARM] / prov,
                prov / p[P_MAX_REPLICAS],
            )
            for f in feats:
                out[b, k] = _box(_feature(f), lo, hi)
                k += 1
        # the window's request mix (`contract._mix_features`): token sums over all its rows
        p_tok = _window_sum(w, b, 0, P_TPS, scratch)
        o_tok = _window_sum(w, b, 0, O_TPS, scratch)
        share = p_tok / _npmax(p_tok + o_tok, 1e-12) if p_tok + o_tok > 0 else 0.0
        if p[P_HAS_MODEL] > 0:
            lp = np.log2(isl / p[P_REF_PROMPT])
            lo2 = np.log2(osl / p[P_REF_OUTPUT])
        else:
            lp = lo2 = 0.0
        out[b, k] = _box(_clip(lp, -1.0, 6.0), lo, hi)
        out[b, k + 1] = _box(_clip(lo2, -1.0, 6.0), lo, hi)
        out[b, k + 2] = _box(share, lo, hi)
        phase = 2.0 * np.pi * (_nan0(w[b, n_t - 1, T_S]) % _DAY_S) / _DAY_S
        out[b, k + 3] = _box(np.sin(phase), lo, hi)
        out[b, k + 4] = _box(np.cos(phase), lo, hi)


@njit(cache=True)
def decode_rows(
    action: np.ndarray,
    w: np.ndarray,
    p: np.ndarray,
    ap: np.ndarray,
    replicas: np.ndarray,
    warm: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """`contract.ActionSpec.decode(action, w[:, -1], spec, w)` into replicas (B,), warm (B,)."""
    n_t = w.shape[1]
    u_min, u_max, drain_s, max_warm, hold_band = ap[0], ap[1], ap[2], ap[3], ap[4]
    for b in range(w.shape[0]):
        a0 = _clip(_nan0(action[b, 0]), -1.0, 1.0)
        a1 = _clip(_nan0(action[b, 1]), -1.0, 1.0)
        u = u_min + (u_max - u_min) * (a0 + 1.0) * 0.5
        isl, osl = _request_mix(w, b, p, scratch)
        demand = _nan0(w[b, n_t - 1, ARR]) + _nan0(w[b, n_t - 1, WAIT]) / drain_s
        r = np.ceil(demand / _capacity_at_mix(p, isl, osl) / u - 1e-9)
        if hold_band > 0:
            current = w[b, n_t - 1, DESIRED]
            if np.isfinite(current) and current > 0 and r < current:
                if r > current * (1.0 - hold_band):
                    r = current
        replicas[b] = r
        warm[b] = np.rint((a1 + 1.0) * 0.5 * max_warm)


@njit(cache=True)
def finish_step(
    w: np.ndarray,
    metrics: np.ndarray,
    arrivals: np.ndarray,
    slo_ok: np.ndarray,
    paid: np.ndarray,
    cost_usd: np.ndarray,
    current: np.ndarray,
    before: np.ndarray,
    wid: np.ndarray,
    fleet_ref: np.ndarray,
    mean_arrivals: np.ndarray,
    slo_weight: np.ndarray,
    w_cost: float,
    w_switch: float,
    reward: np.ndarray,
    cost: np.ndarray,
) -> None:
    """The rest of `AutoscaleCore.step`: shift the metrics row into the window, the reward and
    the interval's cost. `before` (3, B) holds the targets, cost and SLO-met requests before it."""
    n_t = w.shape[1]
    for b in range(w.shape[0]):
        for t in range(n_t - 1):
            for f in range(w.shape[2]):
                w[b, t, f] = w[b, t + 1, f]
        for f in range(w.shape[2]):
            w[b, n_t - 1, f] = metrics[b, f]
        violations = arrivals[b] - (slo_ok[b] - before[2, b])
        i = wid[b]
        r = -(w_cost * paid[b] / fleet_ref[i] + slo_weight[b] * violations / mean_arrivals[i])
        if w_switch > 0:
            r = r - w_switch * (1.0 if current[b] != before[0, b] else 0.0)
        reward[b] = r
        cost[b] = cost_usd[b] - before[1, b]


@njit(cache=True)
def begin_step(
    action: np.ndarray,
    w: np.ndarray,
    p: np.ndarray,
    ap: np.ndarray,
    replicas: np.ndarray,
    warm: np.ndarray,
    scratch: np.ndarray,
    current: np.ndarray,
    cost_usd: np.ndarray,
    slo_ok: np.ndarray,
    before: np.ndarray,
) -> None:
    """`decode_rows`, and the targets, cost and SLO-met requests before the step into `before`."""
    decode_rows(action, w, p, ap, replicas, warm, scratch)
    for b in range(w.shape[0]):
        before[0, b] = current[b]
        before[1, b] = cost_usd[b]
        before[2, b] = slo_ok[b]
