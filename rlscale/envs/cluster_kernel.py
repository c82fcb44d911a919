"""`ClusterSim.step` as two numba kernels, one cluster at a time: `plan` applies the targets
(cancels, drains, the warm pool) and counts the cold starts and wakes to draw; the caller draws
their durations from the sim's generator exactly as the numpy step does (same calls, same
order), and `advance` places them, serves the interval (`serving.serve_kernel.serve_row`),
advances the pipelines, accrues the totals and writes the metrics rows.

The numpy methods of `ClusterSim` stay the reference; this transcribes them per cluster in the
same order of floating-point operations (replica counts are whole numbers, so the ring sums are
exact in any order). tests/envs/test_cluster_kernel.py steps both side by side.

State comes packed, so one call unboxes a few arrays, not forty (numba's call costs ~0.1 us an
array): `rows` (N_ROWS, B) per-cluster floats, `rings` (4, B, H_start) = starting count /
partial, warm-loading count / partial, `wake` (2, B, H_wake), `tot` (9, B) the Totals fields,
`ints` (3, B) = wid, t, t_end. `ClusterSim` keeps its public attributes as views of these.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rlscale import contract as _contract
from rlscale.contract import FIELD_INDEX
from rlscale.serving import model as _model
from rlscale.serving import serve_kernel as _serve_kernel
from rlscale.serving.jit_cache import drop_stale
from rlscale.serving.serve_kernel import (
    OUT_COMPLETED,
    OUT_DROPPED,
    OUT_GPU,
    OUT_KV,
    OUT_QUEUE,
    OUT_RUN_ISL,
    OUT_RUN_OSL,
    OUT_RUNNING,
    OUT_SLO_OK,
    OUT_STARTED,
    Q50,
    Q95,
    Q99,
    serve_row,
)

# the kernels call serve_kernel's and compile in its, serving.model's and the contract's
# constants (`serving.jit_cache`)
drop_stale(__file__, _serve_kernel.__file__, _model.__file__, _contract.__file__)

# rows of `rows`
READY, WARM, QUEUE, RUNNING, RUN_PROMPT, RUN_OUTPUT, COLD_SCALE = 0, 1, 2, 3, 4, 5, 6
N_ROWS = 7
# rows of `tot`, in `Totals` field order
T_ARRIVED, T_COMPLETED, T_DROPPED, T_SLO_OK, T_COST, T_GPU_H = 0, 1, 2, 3, 4, 5
T_COLD, T_SCALE, T_REPLICA_INTERVALS = 6, 7, 8
# rows of `step_out`
S_ARRIVALS, S_PAID, S_READY_EFF = 0, 1, 2
# rows of `params`
P_DT, P_SCV, P_TIMEOUT, P_TTFT_SLO, P_TPOT_SLO, P_USD, P_GPUS = 0, 1, 2, 3, 4, 5, 6
P_TTFT_SLO_PER_1K = 7  # the SLO class's TTFT slope (s per 1k prompt tokens; 0: flat)

_M_TIME = FIELD_INDEX["time_s"]
_M_ARR = FIELD_INDEX["arrival_rps"]
_M_PTOK = FIELD_INDEX["prompt_tokens_per_s"]
_M_OTOK = FIELD_INDEX["output_tokens_per_s"]
_M_WAIT = FIELD_INDEX["requests_waiting"]
_M_RUN = FIELD_INDEX["requests_running"]
_M_KV = FIELD_INDEX["kv_cache_usage"]
_M_GPU = FIELD_INDEX["gpu_utilization_pct"]
_M_TTFT50, _M_TTFT95, _M_TTFT99 = (FIELD_INDEX[f"ttft_p{p}_s"] for p in (50, 95, 99))
_M_TPOT50, _M_TPOT95, _M_TPOT99 = (FIELD_INDEX[f"tpot_p{p}_s"] for p in (50, 95, 99))
_M_DESIRED = FIELD_INDEX["replicas_desired"]
_M_READY = FIELD_INDEX["replicas_ready"]
_M_STARTING = FIELD_INDEX["replicas_starting"]
_M_WARM = FIELD_INDEX["replicas_warm"]
_M_DRAINING = FIELD_INDEX["replicas_draining"]


# Replica counts are whole numbers, so their sum is exact in any order: reassociating lets LLVM
# vectorise it (the rings are ~60 bins wide and mostly empty).
@njit(cache=True, fastmath={"reassoc", "nsz"})
def _row_sum(a: np.ndarray, b: int) -> float:
    s = 0.0
    for c in range(a.shape[1]):
        s += a[b, c]
    return s


@njit(cache=True)
def _cancel_newest(count: np.ndarray, partial: np.ndarray, b: int, t_head: int, n: float) -> float:
    """`ClusterSim._cancel_newest` for one cluster: up to n replicas, latest-ready first."""
    h = count.shape[1]
    before = 0.0
    removed = 0.0
    for k in range(h):
        col = (t_head + h - 1 - k) % h
        c = count[b, col]
        if c == 0.0:
            continue
        take = min(max(n - before, 0.0), c)
        keep = 1.0 - take / max(c, 1e-12)
        count[b, col] = c - take
        partial[b, col] *= keep
        removed += take
        before += c
    return removed


@njit(cache=True)
def plan(
    target: np.ndarray,
    target_warm: np.ndarray,
    use_warm: bool,
    rows: np.ndarray,
    rings: np.ndarray,
    wake: np.ndarray,
    draining: np.ndarray,
    tot: np.ndarray,
    t_head: int,
    counts: np.ndarray,
) -> tuple[int, int, int]:
    """`_scale_toward` then `_resize_warm_pool`, except the admissions: counts (3, B) gets the
    wakes, cold starts and warm-pool loads to admit; returns their totals (the draws to make)."""
    n_wake = 0
    n_cold = 0
    n_grow = 0
    last = draining.shape[1] - 1
    for b in range(target.shape[0]):
        ready = rows[READY, b]
        provisioned = ready + _row_sum(rings[0], b) + _row_sum(wake[0], b)
        delta = target[b] - provisioned
        up = max(delta, 0.0)
        from_warm = 0.0
        cold = 0.0
        if up > 0.0:
            from_warm = min(up, rows[WARM, b])
            rows[WARM, b] -= from_warm
            cold = up - from_warm
            tot[T_COLD, b] += cold
        down = max(-delta, 0.0)
        if down > 0.0:
            left = down - _cancel_newest(rings[0], rings[1], b, t_head, down)
            left -= _cancel_newest(wake[0], wake[1], b, t_head, left)
            to_drain = min(left, ready)
            rows[READY, b] = ready - to_drain
            draining[b, last] += to_drain
        if delta != 0.0:
            tot[T_SCALE, b] += 1.0
        grow = 0.0
        if use_warm:
            wdelta = target_warm[b] - (rows[WARM, b] + _row_sum(rings[2], b))
            grow = max(wdelta, 0.0)
            if grow > 0.0:
                tot[T_COLD, b] += grow
            shrink = max(-wdelta, 0.0)
            if shrink > 0.0:
                left = shrink - _cancel_newest(rings[2], rings[3], b, t_head, shrink)
                rows[WARM, b] -= min(left, rows[WARM, b])
        counts[0, b] = from_warm
        counts[1, b] = cold
        counts[2, b] = grow
        n_wake += int(from_warm)
        n_cold += int(cold)
        n_grow += int(grow)
    return n_wake, n_cold, n_grow


@njit(cache=True)
def _admit(
    count: np.ndarray,
    partial: np.ndarray,
    b: int,
    n: int,
    draws: np.ndarray,
    k: int,
    pool: np.ndarray,
    scale: float,
    interval_s: float,
    t_head: int,
    scratch: np.ndarray,
) -> int:
    """`ClusterSim._admit` for one cluster's n replicas, durations pool[draws[k:k + n]]; the
    served parts are summed per bin first, as bincount does, then added (scratch[:h] holds
    the sums, scratch[h:] marks the bins still to add; only the bins touched are visited)."""
    h = count.shape[1]
    for m in range(n):
        cell = (t_head + min(int(pool[draws[k + m]] * scale / interval_s), h - 2)) % h
        scratch[cell] = 0.0
        scratch[h + cell] = 1.0
    for m in range(n):
        pos = pool[draws[k + m]] * scale / interval_s
        bins = min(int(pos), h - 2)
        cell = (t_head + bins) % h
        count[b, cell] += 1.0
        scratch[cell] += 1.0 - min(pos - bins, 1.0)
    for m in range(n):
        cell = (t_head + min(int(pool[draws[k + m]] * scale / interval_s), h - 2)) % h
        if scratch[h + cell] == 1.0:
            partial[b, cell] += scratch[cell]
            scratch[h + cell] = 0.0
    return k + n


@njit(cache=True)
def advance(
    target: np.ndarray,
    counts: np.ndarray,
    draws_wake: np.ndarray,
    draws_cold: np.ndarray,
    draws_grow: np.ndarray,
    wake_pool: np.ndarray,
    cold_pool: np.ndarray,
    rows: np.ndarray,
    rings: np.ndarray,
    wake: np.ndarray,
    draining: np.ndarray,
    tot: np.ndarray,
    lat: np.ndarray,
    metrics: np.ndarray,
    ints: np.ndarray,
    done: np.ndarray,
    tables: np.ndarray,
    per_workload: np.ndarray,
    lengths: np.ndarray,
    params: np.ndarray,
    t_head: int,
    out: np.ndarray,
    ttft_q: np.ndarray,
    tpot_q: np.ndarray,
    step_out: np.ndarray,
) -> None:
    """The rest of `ClusterSim.step` for every cluster (see the module docstring)."""
    dt = params[P_DT]
    h_s = rings.shape[2]
    h_w = wake.shape[2]
    head = t_head % h_s
    whead = t_head % h_w
    scratch = np.empty(2 * max(h_s, h_w))
    kw = 0
    kc = 0
    kg = 0
    n_drain = draining.shape[1]
    for b in range(target.shape[0]):
        scale = rows[COLD_SCALE, b]
        # admissions in the numpy step's order: wakes, cold starts, warm-pool loads
        if counts[0, b] > 0:
            kw = _admit(wake[0], wake[1], b, int(counts[0, b]), draws_wake, kw, wake_pool,
                        scale, dt, t_head, scratch)  # fmt: skip
        if counts[1, b] > 0:
            kc = _admit(rings[0], rings[1], b, int(counts[1, b]), draws_cold, kc, cold_pool,
                        scale, dt, t_head, scratch)  # fmt: skip
        if counts[2, b] > 0:
            kg = _admit(rings[2], rings[3], b, int(counts[2, b]), draws_grow, kg, cold_pool,
                        scale, dt, t_head, scratch)  # fmt: skip
        n_starting = _row_sum(rings[0], b)
        n_waking = _row_sum(wake[0], b)
        n_draining = _row_sum(draining, b)
        ready = rows[READY, b]
        warm = rows[WARM, b]
        paid = ready + warm + n_draining + n_starting + _row_sum(rings[2], b) + n_waking
        ready_eff = ready + rings[1, b, head] + wake[1, b, whead]
        # _serve: this interval's load (none once the window has ended)
        wid = ints[0, b]
        t = min(ints[1, b], lengths[wid] - 1)
        arrivals = 0.0 if done[b] else tables[0, wid, t]
        prompt = tables[1, wid, t]
        output = tables[2, wid, t]
        serve_row(
            b, rows[QUEUE, b], rows[RUNNING, b], ready_eff, arrivals, prompt, output,
            rows[RUN_PROMPT, b], rows[RUN_OUTPUT, b], per_workload[1, wid], per_workload[2, wid],
            params[P_SCV], dt, params[P_TIMEOUT], params[P_TTFT_SLO], params[P_TPOT_SLO],
            params[P_TTFT_SLO_PER_1K], lat, out, ttft_q, tpot_q,
        )  # fmt: skip
        rows[QUEUE, b] = out[OUT_QUEUE, b]
        rows[RUNNING, b] = out[OUT_RUNNING, b]
        rows[RUN_PROMPT, b] = out[OUT_RUN_ISL, b]
        rows[RUN_OUTPUT, b] = out[OUT_RUN_OSL, b]
        still_starting = n_starting - rings[0, b, head] + n_waking
        still_starting -= wake[0, b, whead]
        still_draining = n_draining - draining[b, 0]
        # _advance_pipelines
        ready = ready + (rings[0, b, head] + wake[0, b, whead])
        warm = warm + rings[2, b, head]
        rows[READY, b] = ready
        rows[WARM, b] = warm
        for k in range(4):
            rings[k, b, head] = 0.0
        wake[0, b, whead] = 0.0
        wake[1, b, whead] = 0.0
        for c in range(n_drain - 1):
            draining[b, c] = draining[b, c + 1]
        draining[b, n_drain - 1] = 0.0
        # _account
        tot[T_ARRIVED, b] += arrivals
        tot[T_COMPLETED, b] += out[OUT_COMPLETED, b]
        tot[T_DROPPED, b] += out[OUT_DROPPED, b]
        tot[T_SLO_OK, b] += out[OUT_SLO_OK, b]
        tot[T_COST, b] += paid * params[P_USD]
        tot[T_GPU_H, b] += paid * params[P_GPUS] * dt / 3600.0
        tot[T_REPLICA_INTERVALS, b] += ready_eff
        # _write_metrics
        metrics[b, _M_TIME] = per_workload[0, wid] + float(ints[1, b] + 1) * dt
        metrics[b, _M_ARR] = arrivals / dt
        metrics[b, _M_PTOK] = out[OUT_STARTED, b] * prompt / dt
        metrics[b, _M_OTOK] = out[OUT_COMPLETED, b] * output / dt
        metrics[b, _M_WAIT] = out[OUT_QUEUE, b]
        metrics[b, _M_RUN] = out[OUT_RUNNING, b]
        metrics[b, _M_KV] = out[OUT_KV, b]
        metrics[b, _M_GPU] = out[OUT_GPU, b]
        metrics[b, _M_TTFT50] = ttft_q[b, Q50]
        metrics[b, _M_TTFT95] = ttft_q[b, Q95]
        metrics[b, _M_TTFT99] = ttft_q[b, Q99]
        metrics[b, _M_TPOT50] = tpot_q[b, Q50]
        metrics[b, _M_TPOT95] = tpot_q[b, Q95]
        metrics[b, _M_TPOT99] = tpot_q[b, Q99]
        metrics[b, _M_DESIRED] = target[b]
        metrics[b, _M_READY] = ready
        metrics[b, _M_STARTING] = still_starting
        metrics[b, _M_WARM] = warm
        metrics[b, _M_DRAINING] = still_draining
        step_out[S_ARRIVALS, b] = arrivals
        step_out[S_PAID, b] = paid
        step_out[S_READY_EFF, b] = ready_eff
        ints[1, b] += 1
        done[b] = ints[1, b] >= ints[2, b]
