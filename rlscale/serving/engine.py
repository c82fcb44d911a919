"""A request-level serving engine: the reference the fluid model (`serving.model.serve_interval`)
is checked against. One `FleetEngine` is one service: a router in front of replicas that each
run vLLM-style iteration-level continuous batching.

Per replica, every iteration (a forward pass) is scheduled as vLLM V1's scheduler does it:

1. requests waiting longer than `timeout_s` without a first token are dropped (the client gave up);
2. running requests first, in admission order: each asks for `prompt + generated - computed`
   tokens (a prefill chunk, or 1 for a decode), capped by what is left of the iteration's token
   budget (`max_num_batched_tokens`, chunked prefill); when the KV cache cannot hold the new
   tokens the most recently admitted running request is preempted by recompute (its KV freed, it
   goes back to the front of the waiting queue and later re-prefills prompt + generated tokens);
3. then, only if nothing was preempted, waiting requests FCFS while there is budget, a batch
   slot (`max_batch` = `--max-num-seqs`) and KV room for their first chunk.

Routing (`EngineConfig.router`): least outstanding requests (the default: the replica with the
fewest running + waiting, ties round robin, as nginx `least_conn` or HAProxy `leastconn` with
exact counts), round robin, or waiting-weighted (score 4 x waiting + running: vLLM's own
data-parallel balancer, `DPLBAsyncMPClient` in vllm/v1/engine/core_client.py, here with exact
counts where vLLM's are up to 100 ms old). With identical requests least outstanding herds, and
that is the rule, not a defect of this engine (an independent toy simulator shows the same): a
cohort admitted in one iteration completes in one iteration, which leaves its replica the least
loaded by the cohort's size, so it takes the next arrivals, which queue behind each other for
their prefills and complete together again; the TTFT tail grows with the fleet and the run's
length (8B, 70 % load, 1,155 / 211 tokens each: p95 0.15 s on 1 replica, 0.37 s on 4, 0.52 s on
8, over 30 min). A size spread (5 % is enough) desynchronises the cohorts; counting a waiting
request as 4 steers arrivals away from a replica with a prefill queue (0.11 s on 4 and on 8).

When an iteration ends, every request whose known tokens are now all computed samples one token:
the first one sets its TTFT, the last one completes it and frees its KV. TPOT is vLLM's
(finish - first token) / (output - 1). KV is counted in tokens (no 16-token blocks).

Iteration time (the one physical assumption, see `IterationModel`):

    t_iter_ms = tpot_base_ms                                 weights read once per forward pass
              + tpot_ms_per_seq          * decode_seqs       per-sequence decode work
              + tpot_ms_per_seq_per_ktok * kv_tokens_read/1000   attention over the cached context
              + prefill_ms_per_token'    * prefill_tokens    prompt tokens in this iteration

These are the TPOT fit's terms read per iteration: the profile's TPOT(c, ctx, r) is exactly this
sum in steady state, where a step carries c decodes reading c * ctx KV tokens and c * r prompt
tokens. `prefill_ms_per_token'` is therefore the TPOT fit's `tpot_ms_per_prefill_token` (the
marginal cost of a prompt token inside a batch, R² 0.998 on iteration data), not the TTFT fit's
`prefill_ms_per_token`, whose closed-loop measurements include waiting behind other prefills
(and the `prefill_interference` term is that waiting again: used as service time it would count
queueing twice). The TTFT fit's `prefill_base_ms` (API server, tokenisation, scheduling and
streaming of the first token: work off the GPU's critical path) is added to every TTFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rlscale.profiles.model import LatencyModel

try:  # numba makes the engine ~100x faster; without it the same code runs as plain Python
    from numba import njit as _numba_njit

    def _njit(fn: Any) -> Any:
        return _numba_njit(cache=True, nogil=True)(fn)

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing

    def _njit(fn: Any) -> Any:
        return fn

    HAVE_NUMBA = False

# vLLM V1 `max_num_batched_tokens` for the OpenAI server on GPUs with >= 70 GiB (H100, H200):
# 8192 (engine/arg_utils.py get_batch_defaults; 2048 on smaller GPUs).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192

# request states
_ROUTER, _WAITING, _RUNNING, _DONE, _DROPPED = 0, 1, 2, 3, 4
# int scalar slots in `FleetEngine.ctr`
_NEXT_ID, _N_IDS, _LOW_ID, _RT_HEAD, _RT_LEN, _RR = 0, 1, 2, 3, 4, 5
_N_TTFT, _N_DONE, _N_DROPPED, _GEN_TOK, _PROMPT_TOK, _PREEMPT, _N_ITER = 6, 7, 8, 9, 10, 11, 12
# closed-loop client (`FleetEngine.hold_concurrency`): on (0/1), id of the next request a
# completion releases; requests from that id on are not sent before a completion frees a client
_CL_ON, _CL_NEXT = 13, 14
_N_CTR = 15
# float params (and one float of state: the time of the latest completion)
_P_BASE, _P_SEQ, _P_KTOK, _P_PF, _P_OVERHEAD, _P_TIMEOUT, _P_LAST_DONE = 0, 1, 2, 3, 4, 5, 6
# int params
_I_MAXB, _I_KV, _I_BUDGET, _I_ROUTER, _I_QCAP = 0, 1, 2, 3, 4
# `ip[_I_ROUTER]`: least outstanding (running + waiting), round robin, waiting-weighted (module
# docstring)
_ROUTERS = {"least_outstanding": 0, "round_robin": 1, "waiting_weighted": 2}
_WAITING_WEIGHT = 4  # vLLM's DP balancer: score = 4 x waiting + running


@dataclass(frozen=True)
class EngineConfig:
    """How the engine schedules and routes (defaults: vLLM V1 on an H100-class GPU)."""

    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    router: Literal["least_outstanding", "round_robin", "waiting_weighted"] = "least_outstanding"
    # which fit prices a prompt token inside an iteration: the TPOT fit's marginal cost (default,
    # see the module docstring) or the TTFT fit's per-token slope (a sensitivity check)
    prefill_cost: Literal["tpot_fit", "ttft_fit"] = "tpot_fit"
    queue_capacity: int = 32768  # waiting requests per replica; beyond it a request is dropped

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )
        if self.router not in _ROUTERS:
            raise ValueError(f"router must be one of {sorted(_ROUTERS)}, got {self.router!r}")
        if self.prefill_cost not in ("tpot_fit", "ttft_fit"):
            raise ValueError(
                f"prefill_cost must be 'tpot_fit' or 'ttft_fit', got {self.prefill_cost!r}"
            )


@dataclass(frozen=True)
class IterationModel:
    """Seconds one forward pass takes, from a profile's coefficients (module docstring)."""

    base_s: float
    per_decode_seq_s: float
    per_kv_token_s: float
    per_prefill_token_s: float
    ttft_overhead_s: float  # added to every TTFT, does not hold the GPU

    @classmethod
    def from_latency(cls, lat: LatencyModel, config: EngineConfig | None = None) -> IterationModel:
        cfg = config or EngineConfig()
        # A profile fitted without the prefill term (it defaults to 0) says prompt tokens add
        # nothing measurable to a forward pass; that is taken as it is. The TTFT fit's slope is no
        # fallback: on the 8B profile (0.063 vs 0.021 ms/token) it halves the replica's capacity,
        # since 22.6 req/s x 1,155 tokens x 0.063 ms is more than a second of GPU per second.
        pf_ms = (
            lat.prefill_ms_per_token
            if cfg.prefill_cost == "ttft_fit"
            else lat.tpot_ms_per_prefill_token
        )
        return cls(
            base_s=lat.tpot_base_ms / 1e3,
            per_decode_seq_s=lat.tpot_ms_per_seq / 1e3,
            per_kv_token_s=lat.tpot_ms_per_seq_per_ktok / 1e6,
            per_prefill_token_s=pf_ms / 1e3,
            ttft_overhead_s=lat.prefill_base_ms / 1e3,
        )

    def iteration_s(
        self, prefill_tokens: float, decode_seqs: float, kv_tokens_read: float
    ) -> float:
        return (
            self.base_s
            + self.per_decode_seq_s * decode_seqs
            + self.per_kv_token_s * kv_tokens_read
            + self.per_prefill_token_s * prefill_tokens
        )


@dataclass
class AdvanceStats:
    """What happened in one `FleetEngine.advance` call (the requests observed in it)."""

    ttft_s: np.ndarray  # TTFT of each request whose first token came in the window
    done_ttft_s: np.ndarray  # TTFT of each request completed in the window
    done_tpot_s: np.ndarray  # its TPOT (0 for a one-token output)
    done_prompt_tokens: np.ndarray  # its prompt tokens (for a per-length TTFT SLO)
    dropped: int
    generated_tokens: int
    prompt_tokens: int  # prompt tokens of the requests whose prefill finished in the window
    preemptions: int
    iterations: int


# --------------------------------------------------------------------------------------------
# kernel (numba): all state lives in the arrays, so a call can stop at any event and resume


@_njit
def _push_back(q: np.ndarray, qhead: np.ndarray, qlen: np.ndarray, r: int, rid: int) -> bool:
    cap = q.shape[1]
    if qlen[r] >= cap:
        return False
    q[r, (qhead[r] + qlen[r]) % cap] = rid
    qlen[r] += 1
    return True


@_njit
def _push_front(
    q: np.ndarray,
    qhead: np.ndarray,
    qlen: np.ndarray,
    r: int,
    rid: int,
    rq_state: np.ndarray,
    ctr: np.ndarray,
    mask: int,
) -> None:
    # a preempted request always goes back in front; at capacity it displaces the newest waiting
    # one (in the slot before the head), which is dropped
    cap = q.shape[1]
    qhead[r] = (qhead[r] - 1) % cap
    if qlen[r] < cap:
        qlen[r] += 1
    else:
        rq_state[q[r, qhead[r]] & mask] = _DROPPED
        ctr[_N_DROPPED] += 1
    q[r, qhead[r]] = rid


@_njit
def _schedule(
    r: int,
    now: float,
    rq_arr: np.ndarray,
    rq_p: np.ndarray,
    rq_o: np.ndarray,
    rq_g: np.ndarray,
    rq_c: np.ndarray,
    rq_n: np.ndarray,
    rq_state: np.ndarray,
    rp_busy: np.ndarray,
    rp_start: np.ndarray,
    rp_end: np.ndarray,
    rp_kv: np.ndarray,
    run: np.ndarray,
    nrun: np.ndarray,
    q: np.ndarray,
    qhead: np.ndarray,
    qlen: np.ndarray,
    fp: np.ndarray,
    ip: np.ndarray,
    ctr: np.ndarray,
    mask: int,
) -> None:
    """Start replica r's next iteration at `now` (or leave it idle when it has nothing to do)."""
    qcap = q.shape[1]
    timeout = fp[_P_TIMEOUT]
    # 1. clients that waited past the timeout without a first token have gone
    while qlen[r] > 0:
        rid = q[r, qhead[r]]
        s = rid & mask
        if rq_g[s] == 0 and now - rq_arr[s] > timeout:
            rq_state[s] = _DROPPED
            ctr[_N_DROPPED] += 1
            qhead[r] = (qhead[r] + 1) % qcap
            qlen[r] -= 1
        else:
            break
    budget = ip[_I_BUDGET]
    kv_free = ip[_I_KV] - rp_kv[r]
    n_dec = 0
    kv_read = 0
    n_pf = 0
    preempted = False
    # 2. running requests, in admission order
    i = 0
    while i < nrun[r]:
        rid = run[r, i]
        s = rid & mask
        need = rq_p[s] + rq_g[s] - rq_c[s]
        n = min(need, budget)
        if n <= 0:
            rq_n[s] = 0
            i += 1
            continue
        # make KV room by preempting the newest running request (recompute)
        while kv_free < n and nrun[r] - 1 > i:
            last = nrun[r] - 1
            vid = run[r, last]
            vs = vid & mask
            kv_free += rq_c[vs]
            rp_kv[r] -= rq_c[vs]
            rq_c[vs] = 0
            rq_n[vs] = 0
            rq_state[vs] = _WAITING
            _push_front(q, qhead, qlen, r, vid, rq_state, ctr, mask)
            nrun[r] -= 1
            ctr[_PREEMPT] += 1
            preempted = True
        if kv_free < n:  # it is the newest itself: preempt it
            kv_free += rq_c[s]
            rp_kv[r] -= rq_c[s]
            rq_c[s] = 0
            rq_n[s] = 0
            rq_state[s] = _WAITING
            _push_front(q, qhead, qlen, r, rid, rq_state, ctr, mask)
            nrun[r] -= 1
            ctr[_PREEMPT] += 1
            preempted = True
            break
        rq_n[s] = n
        kv_free -= n
        rp_kv[r] += n
        budget -= n
        if need == 1 and rq_g[s] >= 1:
            n_dec += 1
            kv_read += rq_c[s]
        else:
            n_pf += n
        i += 1
    # 3. waiting requests, FCFS, unless this step preempted (as vLLM V1)
    if not preempted:
        while budget > 0 and nrun[r] < ip[_I_MAXB] and qlen[r] > 0:
            rid = q[r, qhead[r]]
            s = rid & mask
            if rq_g[s] == 0 and now - rq_arr[s] > timeout:
                rq_state[s] = _DROPPED
                ctr[_N_DROPPED] += 1
                qhead[r] = (qhead[r] + 1) % qcap
                qlen[r] -= 1
                continue
            need = rq_p[s] + rq_g[s] - rq_c[s]
            n = min(need, budget)
            if kv_free < n:
                break
            qhead[r] = (qhead[r] + 1) % qcap
            qlen[r] -= 1
            run[r, nrun[r]] = rid
            nrun[r] += 1
            rq_state[s] = _RUNNING
            rq_n[s] = n
            kv_free -= n
            rp_kv[r] += n
            budget -= n
            n_pf += n
    if n_dec + n_pf == 0:
        rp_busy[r] = False
        return
    dur = fp[_P_BASE] + fp[_P_SEQ] * n_dec + fp[_P_KTOK] * kv_read + fp[_P_PF] * n_pf
    rp_busy[r] = True
    rp_start[r] = now
    rp_end[r] = now + dur
    ctr[_N_ITER] += 1


@_njit
def _finish(
    r: int,
    now: float,
    rq_arr: np.ndarray,
    rq_p: np.ndarray,
    rq_o: np.ndarray,
    rq_g: np.ndarray,
    rq_c: np.ndarray,
    rq_n: np.ndarray,
    rq_first: np.ndarray,
    rq_state: np.ndarray,
    rp_kv: np.ndarray,
    run: np.ndarray,
    nrun: np.ndarray,
    fp: np.ndarray,
    ctr: np.ndarray,
    mask: int,
    obs_ttft: np.ndarray,
    obs_dttft: np.ndarray,
    obs_dtpot: np.ndarray,
    obs_dprompt: np.ndarray,
) -> None:
    """Apply replica r's iteration that ends at `now`: tokens computed, sampled, completions."""
    keep = 0
    overhead = fp[_P_OVERHEAD]
    for i in range(nrun[r]):
        rid = run[r, i]
        s = rid & mask
        n = rq_n[s]
        if n > 0:
            rq_n[s] = 0
            rq_c[s] += n
            if rq_c[s] == rq_p[s] + rq_g[s]:
                rq_g[s] += 1
                ctr[_GEN_TOK] += 1
                if rq_g[s] == 1:
                    rq_first[s] = now
                    obs_ttft[ctr[_N_TTFT]] = now - rq_arr[s] + overhead
                    ctr[_N_TTFT] += 1
                    ctr[_PROMPT_TOK] += rq_p[s]
                if rq_g[s] >= rq_o[s]:
                    rq_state[s] = _DONE
                    rp_kv[r] -= rq_c[s]
                    k = ctr[_N_DONE]
                    obs_dttft[k] = rq_first[s] - rq_arr[s] + overhead
                    obs_dtpot[k] = (now - rq_first[s]) / (rq_o[s] - 1) if rq_o[s] > 1 else 0.0
                    obs_dprompt[k] = rq_p[s]
                    ctr[_N_DONE] += 1
                    fp[_P_LAST_DONE] = now
                    if ctr[_CL_ON] != 0 and ctr[_CL_NEXT] < ctr[_N_IDS]:
                        # the freed client sends its next request now (or at its scheduled
                        # time, if that is later: `vllm bench serve --request-rate` with
                        # `--max-concurrency`)
                        ns = ctr[_CL_NEXT] & mask
                        rq_arr[ns] = max(rq_arr[ns], now)
                        ctr[_CL_NEXT] += 1
                    continue
        run[r, keep] = rid
        keep += 1
    nrun[r] = keep


@_njit
def _route(
    rid: int,
    now: float,
    rq_arr: np.ndarray,
    rq_p: np.ndarray,
    rq_o: np.ndarray,
    rq_g: np.ndarray,
    rq_c: np.ndarray,
    rq_n: np.ndarray,
    rq_state: np.ndarray,
    rq_rep: np.ndarray,
    rp_exists: np.ndarray,
    rp_accept: np.ndarray,
    rp_active: np.ndarray,
    rp_busy: np.ndarray,
    rp_start: np.ndarray,
    rp_end: np.ndarray,
    rp_kv: np.ndarray,
    run: np.ndarray,
    nrun: np.ndarray,
    q: np.ndarray,
    qhead: np.ndarray,
    qlen: np.ndarray,
    rtq: np.ndarray,
    fp: np.ndarray,
    ip: np.ndarray,
    ctr: np.ndarray,
    mask: int,
) -> bool:
    """Send request `rid` to a ready replica; False when none is ready (it stays with the router)."""
    n_rep = rp_exists.shape[0]
    s = rid & mask
    best = -1
    start = ctr[_RR]
    if ip[_I_ROUTER] != 1:  # the least loaded; ties go round-robin
        w = _WAITING_WEIGHT if ip[_I_ROUTER] == 2 else 1
        best_load = 1 << 60
        for k in range(n_rep):
            rr = (start + k) % n_rep
            if rp_exists[rr] and rp_accept[rr] and rp_active[rr]:
                load = nrun[rr] + w * qlen[rr]
                if load < best_load:
                    best_load = load
                    best = rr
    else:
        for k in range(n_rep):
            rr = (start + k) % n_rep
            if rp_exists[rr] and rp_accept[rr] and rp_active[rr]:
                best = rr
                break
    if best < 0:
        return False
    ctr[_RR] = (best + 1) % n_rep
    if rq_p[s] + rq_o[s] > ip[_I_KV] or not _push_back(q, qhead, qlen, best, rid):
        rq_state[s] = _DROPPED  # can never fit in the KV cache, or the queue is full
        ctr[_N_DROPPED] += 1
        return True
    rq_state[s] = _WAITING
    rq_rep[s] = best
    if not rp_busy[best]:
        _schedule(
            best,
            now,
            rq_arr,
            rq_p,
            rq_o,
            rq_g,
            rq_c,
            rq_n,
            rq_state,
            rp_busy,
            rp_start,
            rp_end,
            rp_kv,
            run,
            nrun,
            q,
            qhead,
            qlen,
            fp,
            ip,
            ctr,
            mask,
        )
    return True


@_njit
def _drop_router_expired(
    now: float,
    rq_arr: np.ndarray,
    rq_state: np.ndarray,
    rtq: np.ndarray,
    fp: np.ndarray,
    ctr: np.ndarray,
    mask: int,
) -> None:
    cap = rtq.shape[0]
    while ctr[_RT_LEN] > 0:
        rid = rtq[ctr[_RT_HEAD]]
        s = rid & mask
        if now - rq_arr[s] > fp[_P_TIMEOUT]:
            rq_state[s] = _DROPPED
            ctr[_N_DROPPED] += 1
            ctr[_RT_HEAD] = (ctr[_RT_HEAD] + 1) % cap
            ctr[_RT_LEN] -= 1
        else:
            break


@_njit
def _advance(
    t0: float,
    t_stop: float,
    rq_arr: np.ndarray,
    rq_p: np.ndarray,
    rq_o: np.ndarray,
    rq_g: np.ndarray,
    rq_c: np.ndarray,
    rq_n: np.ndarray,
    rq_first: np.ndarray,
    rq_state: np.ndarray,
    rq_rep: np.ndarray,
    rp_exists: np.ndarray,
    rp_accept: np.ndarray,
    rp_active: np.ndarray,
    rp_avail: np.ndarray,
    rp_busy: np.ndarray,
    rp_start: np.ndarray,
    rp_end: np.ndarray,
    rp_kv: np.ndarray,
    rp_busy_s: np.ndarray,
    rp_idle_at: np.ndarray,
    run: np.ndarray,
    nrun: np.ndarray,
    q: np.ndarray,
    qhead: np.ndarray,
    qlen: np.ndarray,
    rtq: np.ndarray,
    fp: np.ndarray,
    ip: np.ndarray,
    ctr: np.ndarray,
    obs_ttft: np.ndarray,
    obs_dttft: np.ndarray,
    obs_dtpot: np.ndarray,
    obs_dprompt: np.ndarray,
) -> int:
    """Run events until `t_stop`. Returns 0 when done, 1 when an observation buffer is nearly
    full (the caller empties it and calls again; nothing is lost)."""
    mask = rq_arr.shape[0] - 1
    n_rep = rp_exists.shape[0]
    rtcap = rtq.shape[0]
    room = ip[_I_MAXB] + 1
    while True:
        if (ctr[_N_TTFT] + room > obs_ttft.shape[0]) or (ctr[_N_DONE] + room > obs_dttft.shape[0]):
            return 1
        te = np.inf
        re = -1
        tv = np.inf
        rv = -1
        for r in range(n_rep):
            if not rp_exists[r]:
                continue
            if rp_busy[r] and rp_end[r] < te:
                te = rp_end[r]
                re = r
            if rp_accept[r] and not rp_active[r] and rp_avail[r] < tv:
                tv = rp_avail[r]
                rv = r
        ta = np.inf
        if ctr[_NEXT_ID] < ctr[_N_IDS] and (ctr[_CL_ON] == 0 or ctr[_NEXT_ID] < ctr[_CL_NEXT]):
            ta = rq_arr[ctr[_NEXT_ID] & mask]
        t_next = min(te, min(ta, tv))
        if t_next >= t_stop:
            break
        if tv <= t_next:
            # a replica becomes ready: it takes what the router held
            rp_active[rv] = True
            _drop_router_expired(tv, rq_arr, rq_state, rtq, fp, ctr, mask)
            while ctr[_RT_LEN] > 0:
                rid = rtq[ctr[_RT_HEAD]]
                ctr[_RT_HEAD] = (ctr[_RT_HEAD] + 1) % rtcap
                ctr[_RT_LEN] -= 1
                _route(
                    rid,
                    tv,
                    rq_arr,
                    rq_p,
                    rq_o,
                    rq_g,
                    rq_c,
                    rq_n,
                    rq_state,
                    rq_rep,
                    rp_exists,
                    rp_accept,
                    rp_active,
                    rp_busy,
                    rp_start,
                    rp_end,
                    rp_kv,
                    run,
                    nrun,
                    q,
                    qhead,
                    qlen,
                    rtq,
                    fp,
                    ip,
                    ctr,
                    mask,
                )
        elif ta <= te:
            rid = ctr[_NEXT_ID]
            ctr[_NEXT_ID] += 1
            routed = _route(
                rid,
                ta,
                rq_arr,
                rq_p,
                rq_o,
                rq_g,
                rq_c,
                rq_n,
                rq_state,
                rq_rep,
                rp_exists,
                rp_accept,
                rp_active,
                rp_busy,
                rp_start,
                rp_end,
                rp_kv,
                run,
                nrun,
                q,
                qhead,
                qlen,
                rtq,
                fp,
                ip,
                ctr,
                mask,
            )
            if not routed:
                if ctr[_RT_LEN] < rtcap:
                    rtq[(ctr[_RT_HEAD] + ctr[_RT_LEN]) % rtcap] = rid
                    ctr[_RT_LEN] += 1
                    rq_state[rid & mask] = _ROUTER
                else:
                    rq_state[rid & mask] = _DROPPED
                    ctr[_N_DROPPED] += 1
        else:
            r = re
            rp_busy[r] = False
            rp_busy_s[r] += te - max(rp_start[r], t0)
            _finish(
                r,
                te,
                rq_arr,
                rq_p,
                rq_o,
                rq_g,
                rq_c,
                rq_n,
                rq_first,
                rq_state,
                rp_kv,
                run,
                nrun,
                fp,
                ctr,
                mask,
                obs_ttft,
                obs_dttft,
                obs_dtpot,
                obs_dprompt,
            )
            _schedule(
                r,
                te,
                rq_arr,
                rq_p,
                rq_o,
                rq_g,
                rq_c,
                rq_n,
                rq_state,
                rp_busy,
                rp_start,
                rp_end,
                rp_kv,
                run,
                nrun,
                q,
                qhead,
                qlen,
                fp,
                ip,
                ctr,
                mask,
            )
            if not rp_busy[r] and nrun[r] == 0 and qlen[r] == 0 and rp_idle_at[r] < 0:
                rp_idle_at[r] = te
    # the window's end: busy time so far, clients still with the router that gave up
    for r in range(n_rep):
        if rp_exists[r] and rp_busy[r]:
            rp_busy_s[r] += t_stop - max(rp_start[r], t0)
    _drop_router_expired(t_stop, rq_arr, rq_state, rtq, fp, ctr, mask)
    low = ctr[_LOW_ID]
    while low < ctr[_NEXT_ID] and (
        rq_state[low & mask] == _DONE or rq_state[low & mask] == _DROPPED
    ):
        low += 1
    ctr[_LOW_ID] = low
    return 0


# --------------------------------------------------------------------------------------------


class FleetEngine:
    """One service: a router and its replicas, simulated request by request.

    Times are seconds on the caller's clock (the fleet simulator uses seconds since the episode
    start). Replicas are slots: `add_replica(ready_at_s)` (it takes requests from then on),
    `drain(slot)` (no new requests; it finishes what it holds), `remove(slot)` (only for a slot
    that holds none: a cancelled start, or a drained replica). Requests are added in arrival
    order with `add_requests` before the `advance` that reaches their arrival time.
    """

    def __init__(
        self,
        latency: LatencyModel,
        config: EngineConfig | None = None,
        *,
        timeout_s: float = 120.0,
        request_capacity: int = 1 << 14,
        replica_capacity: int = 8,
    ) -> None:
        self.config = cfg = config or EngineConfig()
        self.latency = latency
        self.iteration = it = IterationModel.from_latency(latency, cfg)
        self.max_batch = int(latency.max_batch)
        self.kv_cache_tokens = int(latency.kv_cache_tokens)
        self.timeout_s = float(timeout_s)
        self.fp = np.array(
            [
                it.base_s,
                it.per_decode_seq_s,
                it.per_kv_token_s,
                it.per_prefill_token_s,
                it.ttft_overhead_s,
                timeout_s,
                -1.0,
            ]
        )
        self.ip = np.array(
            [
                self.max_batch,
                self.kv_cache_tokens,
                cfg.max_num_batched_tokens,
                _ROUTERS[cfg.router],
                cfg.queue_capacity,
            ],
            dtype=np.int64,
        )
        self.ctr = np.zeros(_N_CTR, dtype=np.int64)
        cap = 1 << max(4, int(math.ceil(math.log2(max(request_capacity, 16)))))
        self._alloc_requests(cap)
        self._alloc_replicas(max(1, replica_capacity))
        self.rtq = np.zeros(1 << 16, dtype=np.int64)
        self._obs_cap = 4096
        self._obs = [np.zeros(self._obs_cap) for _ in range(4)]

    # --- storage ------------------------------------------------------------------------
    def _alloc_requests(self, cap: int) -> None:
        self.rq_arr = np.zeros(cap)
        self.rq_first = np.full(cap, -1.0)
        self.rq_p = np.zeros(cap, dtype=np.int64)
        self.rq_o = np.zeros(cap, dtype=np.int64)
        self.rq_g = np.zeros(cap, dtype=np.int64)
        self.rq_c = np.zeros(cap, dtype=np.int64)
        self.rq_n = np.zeros(cap, dtype=np.int64)
        self.rq_state = np.zeros(cap, dtype=np.int8)
        self.rq_rep = np.full(cap, -1, dtype=np.int64)

    _RQ = ("rq_arr", "rq_first", "rq_p", "rq_o", "rq_g", "rq_c", "rq_n", "rq_state", "rq_rep")
    _RP = (
        "rp_exists",
        "rp_accept",
        "rp_active",
        "rp_avail",
        "rp_busy",
        "rp_start",
        "rp_end",
        "rp_kv",
        "rp_busy_s",
        "rp_idle_at",
        "nrun",
        "qhead",
        "qlen",
    )

    def _grow_requests(self, need: int) -> None:
        old_cap = self.rq_arr.shape[0]
        cap = old_cap
        while cap < need:
            cap *= 2
        old = {k: getattr(self, k) for k in self._RQ}
        self._alloc_requests(cap)
        ids = np.arange(self.ctr[_LOW_ID], self.ctr[_N_IDS])
        for k, arr in old.items():
            getattr(self, k)[ids & (cap - 1)] = arr[ids & (old_cap - 1)]

    def _alloc_replicas(self, n: int) -> None:
        self.rp_exists = np.zeros(n, dtype=np.bool_)
        self.rp_accept = np.zeros(n, dtype=np.bool_)
        self.rp_active = np.zeros(n, dtype=np.bool_)
        self.rp_avail = np.zeros(n)
        self.rp_busy = np.zeros(n, dtype=np.bool_)
        self.rp_start = np.zeros(n)
        self.rp_end = np.zeros(n)
        self.rp_kv = np.zeros(n, dtype=np.int64)
        self.rp_busy_s = np.zeros(n)
        self.rp_idle_at = np.full(n, -1.0)
        self.nrun = np.zeros(n, dtype=np.int64)
        self.qhead = np.zeros(n, dtype=np.int64)
        self.qlen = np.zeros(n, dtype=np.int64)
        self.run = np.zeros((n, self.max_batch), dtype=np.int64)
        self.q = np.zeros((n, self.config.queue_capacity), dtype=np.int64)

    def _grow_replicas(self) -> None:
        old = {k: getattr(self, k) for k in (*self._RP, "run", "q")}
        n_old = self.rp_exists.shape[0]
        self._alloc_replicas(2 * n_old)
        for k, arr in old.items():
            getattr(self, k)[:n_old] = arr

    # --- replicas -----------------------------------------------------------------------
    def add_replica(self, ready_at_s: float, now_s: float | None = None) -> int:
        """A new replica that takes requests from `ready_at_s`; returns its slot."""
        free = np.flatnonzero(~self.rp_exists)
        if free.size == 0:
            self._grow_replicas()
            free = np.flatnonzero(~self.rp_exists)
        r = int(free[0])
        for k in ("rp_busy", "rp_active"):
            getattr(self, k)[r] = False
        self.rp_exists[r] = True
        self.rp_accept[r] = True
        self.rp_avail[r] = ready_at_s
        self.rp_active[r] = now_s is not None and ready_at_s <= now_s
        self.rp_kv[r] = 0
        self.rp_busy_s[r] = 0.0
        self.rp_idle_at[r] = -1.0
        self.nrun[r] = 0
        self.qhead[r] = 0
        self.qlen[r] = 0
        return r

    def drain(self, slot: int, now_s: float) -> None:
        """Stop routing to `slot`; `rp_idle_at[slot]` becomes the time it holds nothing."""
        self.rp_accept[slot] = False
        self.rp_idle_at[slot] = now_s if self.idle(slot) else -1.0

    def idle(self, slot: int) -> bool:
        return bool(not self.rp_busy[slot] and self.nrun[slot] == 0 and self.qlen[slot] == 0)

    def remove(self, slot: int) -> None:
        if not self.idle(slot):
            raise ValueError(f"replica slot {slot} still holds requests")
        self.rp_exists[slot] = False
        self.rp_accept[slot] = False
        self.rp_active[slot] = False

    # --- requests -----------------------------------------------------------------------
    def add_requests(
        self, arrival_s: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray
    ) -> None:
        """Append requests (arrival times sorted, not before the last one added)."""
        n = len(arrival_s)
        if n == 0:
            return
        first = int(self.ctr[_N_IDS])
        live = first + n - int(self.ctr[_LOW_ID])
        if live > self.rq_arr.shape[0]:
            self._grow_requests(live)
        cap = self.rq_arr.shape[0]
        slots = np.arange(first, first + n) & (cap - 1)
        self.rq_arr[slots] = arrival_s
        self.rq_p[slots] = np.maximum(np.asarray(prompt_tokens, dtype=np.int64), 1)
        self.rq_o[slots] = np.maximum(np.asarray(output_tokens, dtype=np.int64), 1)
        self.rq_g[slots] = 0
        self.rq_c[slots] = 0
        self.rq_n[slots] = 0
        self.rq_first[slots] = -1.0
        self.rq_state[slots] = _ROUTER
        self.rq_rep[slots] = -1
        self.ctr[_N_IDS] = first + n

    def hold_concurrency(self, clients: int) -> None:
        """A closed-loop client from here on: of the requests added so far (and later), those
        after the first `clients` not yet sent are sent only when a request completes, each at
        the later of its own arrival time and that completion, as `vllm bench serve
        --max-concurrency` does. Drops do not free a client: use it with a timeout the benchmark
        never reaches and requests that fit the KV cache."""
        if clients < 1:
            raise ValueError(f"clients must be >= 1, got {clients}")
        self.ctr[_CL_ON] = 1
        self.ctr[_CL_NEXT] = self.ctr[_NEXT_ID] + clients

    @property
    def last_completion_s(self) -> float:
        """When the latest request completed (-1 before any)."""
        return float(self.fp[_P_LAST_DONE])

    # --- running ------------------------------------------------------------------------
    def advance(self, t0_s: float, t_stop_s: float) -> AdvanceStats:
        """Serve every event in [t0_s, t_stop_s); returns what was observed in that window."""
        c = self.ctr
        before = c.copy()
        chunks: list[list[np.ndarray]] = [[], [], [], []]
        self.rp_busy_s[:] = 0.0
        while True:
            rc = _advance(
                float(t0_s),
                float(t_stop_s),
                self.rq_arr,
                self.rq_p,
                self.rq_o,
                self.rq_g,
                self.rq_c,
                self.rq_n,
                self.rq_first,
                self.rq_state,
                self.rq_rep,
                self.rp_exists,
                self.rp_accept,
                self.rp_active,
                self.rp_avail,
                self.rp_busy,
                self.rp_start,
                self.rp_end,
                self.rp_kv,
                self.rp_busy_s,
                self.rp_idle_at,
                self.run,
                self.nrun,
                self.q,
                self.qhead,
                self.qlen,
                self.rtq,
                self.fp,
                self.ip,
                c,
                *self._obs,
            )
            chunks[0].append(self._obs[0][: c[_N_TTFT]].copy())
            chunks[1].append(self._obs[1][: c[_N_DONE]].copy())
            chunks[2].append(self._obs[2][: c[_N_DONE]].copy())
            chunks[3].append(self._obs[3][: c[_N_DONE]].copy())
            c[_N_TTFT] = 0
            c[_N_DONE] = 0
            if rc == 0:
                break
            self._obs_cap *= 2
            self._obs = [np.zeros(self._obs_cap) for _ in range(4)]
        return AdvanceStats(
            ttft_s=np.concatenate(chunks[0]),
            done_ttft_s=np.concatenate(chunks[1]),
            done_tpot_s=np.concatenate(chunks[2]),
            done_prompt_tokens=np.concatenate(chunks[3]),
            dropped=int(c[_N_DROPPED] - before[_N_DROPPED]),
            generated_tokens=int(c[_GEN_TOK] - before[_GEN_TOK]),
            prompt_tokens=int(c[_PROMPT_TOK] - before[_PROMPT_TOK]),
            preemptions=int(c[_PREEMPT] - before[_PREEMPT]),
            iterations=int(c[_N_ITER] - before[_N_ITER]),
        )

    # --- state read-outs ----------------------------------------------------------------
    @property
    def arrived(self) -> int:
        return int(self.ctr[_NEXT_ID])

    @property
    def waiting(self) -> int:
        """Requests queued at replicas plus those the router holds (no replica ready)."""
        return int(self.qlen[self.rp_exists].sum() + self.ctr[_RT_LEN])

    @property
    def running(self) -> int:
        return int(self.nrun[self.rp_exists].sum())

    @property
    def dropped(self) -> int:
        return int(self.ctr[_N_DROPPED])

    @property
    def preemptions(self) -> int:
        return int(self.ctr[_PREEMPT])

    def oldest_waiting_s(self, now_s: float) -> float:
        """Age of the oldest request without a first token that is still waiting (0 if none)."""
        ids = np.arange(self.ctr[_LOW_ID], self.ctr[_NEXT_ID])
        if ids.size == 0:
            return 0.0
        s = ids & (self.rq_arr.shape[0] - 1)
        waiting = ((self.rq_state[s] == _WAITING) | (self.rq_state[s] == _ROUTER)) & (
            self.rq_g[s] == 0
        )
        if not waiting.any():
            return 0.0
        return float(now_s - self.rq_arr[s[waiting]].min())

    def kv_used_tokens(self) -> np.ndarray:
        return self.rp_kv.copy()
