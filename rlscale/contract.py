"""The record shared by the simulator and the live controller, and the one observation encoder.

`IntervalMetrics` is what one control interval looked like, in units a Prometheus query can
produce. The simulator fills it from its state (`rlscale.envs.cluster`), the controller from
PromQL (`rlscale.deploy`). `encode` turns a window of them into the policy's observation; the
batched simulator calls `encode_raw` on the same numbers laid out as an array, so there is one
encoder, not two that drift apart.

The observation is normalised per replica (demand per provisioned replica, queue per ready
replica, latency over its SLO), so one policy can serve a 2-replica service and a 40-replica one.

Version 2 measures demand in replica-equivalents at the observed request mix (`request_mix`,
`capacity_at_mix`, `demand_replicas`), not in requests/s at one fixed request size: version 1 sized
a 12k-token-prompt service for chat requests and held 2 % of its SLO. Version-1 checkpoints are
refused (`rlscale.policies.checkpoint`).

A spec with `history_intervals` adds multi-scale history (`history_features`: the arrival rate
of the last minute against the minute L intervals before, per lag); a policy then reads
`rows_needed(spec)` intervals, which the evaluator's rollout and the controller's memory keep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from operator import attrgetter

import numpy as np

CONTRACT_VERSION = 2

# The SLO a service is held to unless it says otherwise: TTFT and TPOT per request, and the share
# of requests that must meet both. The one place these defaults are written.
DEFAULT_TTFT_SLO_S = 2.0
DEFAULT_TPOT_SLO_S = 0.1
DEFAULT_SLO_TARGET = 0.99


@dataclass(frozen=True, slots=True)
class IntervalMetrics:
    """One control interval, as observed. Rates are per second over the interval; gauges are the
    value at the interval's end; latency percentiles are over the requests of the interval.

    A field that could not be observed is NaN (the controller's metrics source sets it so; the
    simulator always fills every field).
    """

    time_s: float  # end of the interval: Unix time live, trace time in the simulator
    interval_s: float
    arrival_rps: float
    prompt_tokens_per_s: float
    output_tokens_per_s: float
    requests_waiting: float  # summed over replicas (vllm:num_requests_waiting)
    requests_running: float  # summed over replicas (vllm:num_requests_running)
    kv_cache_usage: float  # 0..1, mean over ready replicas
    gpu_utilization_pct: float  # 0..100, mean over ready replicas (DCGM_FI_DEV_GPU_UTIL)
    ttft_p50_s: float
    ttft_p95_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    tpot_p99_s: float
    replicas_desired: float  # spec.replicas of the Deployment
    replicas_ready: float
    replicas_starting: float  # created, not Ready yet: capacity on its way
    replicas_warm: float  # pre-loaded standby replicas
    replicas_draining: float  # terminating, finishing in-flight requests

    def to_array(self) -> np.ndarray:
        # the fields read in one C call: `dataclasses.astuple` deep-copies each value, ~70 us a
        # row, and the evaluator converts 24 rows a decision (two thirds of an evaluation's time)
        return np.asarray(_GET_FIELDS(self), dtype=np.float64)

    @classmethod
    def from_array(cls, row: np.ndarray) -> IntervalMetrics:
        return cls(*(float(x) for x in row))

    def has_nan(self) -> list[str]:
        """Names of the fields that are NaN (unobserved)."""
        return [f for f, v in zip(FIELDS, astuple(self), strict=True) if math.isnan(v)]


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(IntervalMetrics))
_GET_FIELDS = attrgetter(*FIELDS)
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(FIELDS)}
N_FIELDS = len(FIELDS)


# The grid of `ObservationSpec.slo_share`: log2 of the request sizes over the reference ones.
SLO_GRID_PROMPT_LOG2: tuple[float, ...] = (-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
SLO_GRID_OUTPUT_LOG2: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
# Where the SLO is out of reach at a mix (a 2 s TTFT with 18k-token prompts), more replicas buy
# little: the SLO correction never more than doubles the fleet the knee asks for.
SLO_SHARE_FLOOR = 0.5


@dataclass(frozen=True, slots=True)
class ObservationSpec:
    """What the encoder and the action map need: a replica's capacity model and the SLO.

    `replica_capacity_rps` is the request rate one ready replica sustains for the profile's
    reference request (`ref_prompt_tokens` / `ref_output_tokens`, from `ServiceProfile`); the
    capacity model below rescales it to the request mix actually observed, so that demand is in
    replica-equivalents whatever the requests look like (a 12k-token prompt is ~10x the work of
    a 1.2k one). The model is the serving model's knee (`rlscale.serving.model._service_curve`),
    written here from its seven coefficients because the contract is the core layer and cannot
    import the profile (`tests/test_contract.py` holds the two to each other):

        ctx  = isl + osl / 2                                  context a decoding request holds
        c    = min(max_batch, kv_cache_tokens / ctx)          requests in flight at the knee
        S(c) = request_overhead_s + isl * prompt_token_s + osl * iteration_s
               + c * (osl * (seq_iteration_s + ctx * ctx_token_iteration_s) + isl * prompt_token_s)
        knee = c / S(c)   requests/s

    The knee is where the queue grows without bound, not where the SLO holds: long prompts
    lose the TTFT SLO well below it (prefill interference grows with the batch). `slo_share` is
    the share of the knee a 4-replica fleet can carry within the SLO (`serving.capacity.
    slo_capacity_rps` / knee, e.g. 0.98 at the reference mix, 0.76 at 8x prompts on the 8B
    profile), tabulated at prompt sizes ref x 2^SLO_GRID_PROMPT_LOG2 (rows) and output sizes
    ref x 2^SLO_GRID_OUTPUT_LOG2 (columns), row-major, floored at SLO_SHARE_FLOOR; capacity is
    rescaled by its bilinear interpolation (in log2 sizes, clamped to the grid). Empty: none.

    `ref_prompt_tokens` = 0 means no model: every request counts as the reference one (the
    version-1 behaviour, kept for hand-built specs in tests). A checkpoint records all of this
    with the contract version.
    """

    replica_capacity_rps: float
    max_batch: float
    ttft_slo_s: float
    tpot_slo_s: float
    max_replicas: float
    window: int = 4
    ref_prompt_tokens: float = 0.0
    ref_output_tokens: float = 0.0
    iteration_s: float = 0.0  # weights read once per decode iteration
    seq_iteration_s: float = 0.0  # per decoding sequence per iteration
    ctx_token_iteration_s: float = 0.0  # per context token read per iteration
    prompt_token_s: float = 0.0  # GPU time per prompt token
    request_overhead_s: float = 0.0  # API server, tokenisation (off the GPU)
    kv_cache_tokens: float = 0.0
    slo_share: tuple[float, ...] = ()
    # multi-scale history: lags in intervals (20, 60, 240 = 5 min, 15 min, 1 h at 15 s), one
    # feature each (`history_features`); empty: none (the shipped checkpoints)
    history_intervals: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # JSON gives a list; keep the spec hashable and immutable
        object.__setattr__(self, "slo_share", tuple(float(x) for x in self.slo_share))
        object.__setattr__(self, "history_intervals", tuple(int(x) for x in self.history_intervals))
        if any(lag < 1 for lag in self.history_intervals):
            raise ValueError(f"history_intervals {self.history_intervals}: each lag must be >= 1")
        n = len(SLO_GRID_PROMPT_LOG2) * len(SLO_GRID_OUTPUT_LOG2)
        if self.slo_share and len(self.slo_share) != n:
            raise ValueError(f"slo_share has {len(self.slo_share)} values, expected {n}")

    @property
    def has_capacity_model(self) -> bool:
        return self.ref_prompt_tokens > 0 and self.ref_output_tokens > 0


# Features per interval in the window, in order. A checkpoint stores this list; loading refuses
# a different one (see rlscale.policies.checkpoint).
FEATURES_PER_STEP: tuple[str, ...] = (
    "demand_per_provisioned_replica",  # arrival_rps / (capacity at the mix * (ready+starting+warm))
    "demand_per_ready_replica",  # arrival_rps / (capacity at the mix * ready)
    "queue_per_ready_replica",  # waiting / (knee concurrency at the mix * ready)
    "running_per_ready_replica",  # running / (knee concurrency at the mix * ready)
    "kv_cache_usage",
    "gpu_utilization",
    "ttft_p95_over_slo",  # log1p-compressed
    "tpot_p95_over_slo",
    "starting_share",  # starting / provisioned
    "warm_share",
    "fleet_fraction",  # provisioned / max_replicas
)
# Features of the window as a whole: the request mix it saw (see `request_mix`).
MIX_FEATURES: tuple[str, ...] = (
    "log2_prompt_tokens_over_ref",  # clipped to [-1, 6]
    "log2_output_tokens_over_ref",
    "prefill_token_share",  # prompt / (prompt + output) tokens
)


# Each history point is the mean arrival rate over this many intervals (a minute at 15 s): one
# 15-s bin of a 5-rps service is a handful of requests, noise rather than a level.
HISTORY_MEAN_INTERVALS = 4


def feature_names(spec: ObservationSpec) -> list[str]:
    names = [f"t-{lag}:{f}" for lag in range(spec.window - 1, -1, -1) for f in FEATURES_PER_STEP]
    history = [f"hist-{lag}:tanh_log_arrivals_now_over_then" for lag in spec.history_intervals]
    return names + list(MIX_FEATURES) + ["time_of_day_sin", "time_of_day_cos"] + history


def observation_size(spec: ObservationSpec) -> int:
    return base_observation_size(spec) + len(spec.history_intervals)


def base_observation_size(spec: ObservationSpec) -> int:
    """The features of the window alone (what `envs.step_kernel.encode_rows` writes)."""
    return spec.window * len(FEATURES_PER_STEP) + len(MIX_FEATURES) + 2


def history_rows(spec: ObservationSpec) -> int:
    """Intervals of arrival history the history features read (0: none)."""
    if not spec.history_intervals:
        return 0
    return max(spec.history_intervals) + HISTORY_MEAN_INTERVALS


def rows_needed(spec: ObservationSpec) -> int:
    """Intervals of IntervalMetrics a policy with this spec reads: its window, or its history."""
    return max(spec.window, history_rows(spec))


def history_features(arrival_rps: np.ndarray, spec: ObservationSpec) -> np.ndarray:
    """Multi-scale history (issue 13, item 2) of arrival-rate series (..., R), oldest first, the
    last entry the interval that just ended, NaN where unobserved or before the history began:
    per lag L in `spec.history_intervals`, tanh(ln(now / then)), where now is the mean rate of the
    last `HISTORY_MEAN_INTERVALS` intervals and then the same mean L intervals earlier. +0.6 is
    twice the rate of L ago, -0.6 half; 0 where either end is unobserved (a fresh controller or
    a trace with no past: "no trend", never a made-up one). Ratios, so the fleet's scale cancels;
    the day and week lags of the issue are not offered: on the validation days the rate a day
    ago misses the next cold start's by 54 % against 4 % for the last value
    (`benchmarks/results/forecast.md`)."""
    a = np.asarray(arrival_rps, dtype=np.float64)
    r = a.shape[-1]
    out = np.zeros((*a.shape[:-1], len(spec.history_intervals)))
    k = HISTORY_MEAN_INTERVALS
    if r < k:
        return out
    now = _finite_mean(a[..., r - k :])
    for j, lag in enumerate(spec.history_intervals):
        if r >= lag + k:
            then = _finite_mean(a[..., r - lag - k : r - lag])
            # a live arrival estimate can dip below 0 (a deriv over a shrinking queue)
            x = np.log((np.maximum(now, 0.0) + 1e-3) / (np.maximum(then, 0.0) + 1e-3))
            out[..., j] = np.where(np.isfinite(x), np.tanh(x), 0.0)
    return out


_I = FIELD_INDEX
_DAY_S = 86_400.0
# A size estimate needs this many requests behind it; below that the reference request is used.
_MIN_REQUESTS_FOR_MIX = 1.0
_MIX_RANGE = 64.0  # sizes are clipped to [ref / 64, ref x 64]: the model is not asked beyond


def knee_concurrency(
    spec: ObservationSpec, prompt_tokens: np.ndarray | float, output_tokens: np.ndarray | float
) -> np.ndarray:
    """Requests in flight per replica at its knee for requests of these mean sizes."""
    if not spec.has_capacity_model:
        return np.full(np.shape(prompt_tokens), float(spec.max_batch))
    ctx = np.asarray(prompt_tokens) + 0.5 * np.asarray(output_tokens)
    return np.minimum(spec.max_batch, spec.kv_cache_tokens / np.maximum(ctx, 1.0))


def _knee_rps(
    spec: ObservationSpec, isl: np.ndarray | float, osl: np.ndarray | float
) -> np.ndarray:
    isl = np.asarray(isl, dtype=np.float64)
    osl = np.asarray(osl, dtype=np.float64)
    ctx = isl + 0.5 * osl
    c = knee_concurrency(spec, isl, osl)
    own_s = spec.prompt_token_s * isl
    s0 = spec.request_overhead_s + own_s + osl * spec.iteration_s
    s1 = osl * (spec.seq_iteration_s + spec.ctx_token_iteration_s * ctx) + own_s
    return c / np.maximum(s0 + s1 * c, 1e-12)


def _slo_share(
    spec: ObservationSpec, isl: np.ndarray | float, osl: np.ndarray | float
) -> np.ndarray:
    if not spec.slo_share:
        return np.ones(np.broadcast_shapes(np.shape(isl), np.shape(osl)))
    gp, go = np.asarray(SLO_GRID_PROMPT_LOG2), np.asarray(SLO_GRID_OUTPUT_LOG2)
    table = np.asarray(spec.slo_share).reshape(len(gp), len(go))
    x = np.clip(np.log2(np.asarray(isl, dtype=np.float64) / spec.ref_prompt_tokens), gp[0], gp[-1])
    y = np.clip(np.log2(np.asarray(osl, dtype=np.float64) / spec.ref_output_tokens), go[0], go[-1])
    i = np.clip(np.searchsorted(gp, x, side="right") - 1, 0, len(gp) - 2)
    j = np.clip(np.searchsorted(go, y, side="right") - 1, 0, len(go) - 2)
    fx = (x - gp[i]) / (gp[i + 1] - gp[i])
    fy = (y - go[j]) / (go[j + 1] - go[j])
    return (
        table[i, j] * (1 - fx) * (1 - fy)
        + table[i + 1, j] * fx * (1 - fy)
        + table[i, j + 1] * (1 - fx) * fy
        + table[i + 1, j + 1] * fx * fy
    )


def capacity_at_mix(
    spec: ObservationSpec, prompt_tokens: np.ndarray | float, output_tokens: np.ndarray | float
) -> np.ndarray:
    """Requests/s one ready replica sustains for requests of these mean sizes: the reference
    capacity times the ratio of the knee x its SLO share to the reference's (8B profile: 22.6
    req/s at 1,155 / 211 tokens; 1.9 at 12,000 / 340 by the knee, ~1.1 within a 2 s TTFT)."""
    if not spec.has_capacity_model:
        return np.full(np.shape(prompt_tokens), float(spec.replica_capacity_rps))
    rp, ro = np.float64(spec.ref_prompt_tokens), np.float64(spec.ref_output_tokens)
    ref = _knee_rps(spec, rp, ro) * _slo_share(spec, rp, ro)
    here = _knee_rps(spec, prompt_tokens, output_tokens) * _slo_share(
        spec, prompt_tokens, output_tokens
    )
    return spec.replica_capacity_rps * here / ref


def request_mix(window: np.ndarray, spec: ObservationSpec) -> tuple[np.ndarray, np.ndarray]:
    """Mean prompt and output tokens per request over metric windows (..., W, N_FIELDS).

    Token counters count the work served, not the work asked for: under overload they stop
    growing while arrivals do. So the sizes are tokens per request *served*, and the requests
    served over the window come from arrivals by conservation: those that arrived less the
    growth of the queue (prompts: prefilled = arrived - d waiting) and of the batch (outputs:
    finished = prefilled - d running). Both the simulator and vLLM's counters obey this, so the
    estimate holds at any load. Too few requests, or unobserved tokens: the reference sizes.
    """
    w = np.nan_to_num(np.asarray(window, dtype=np.float64))
    ref_p = spec.ref_prompt_tokens if spec.has_capacity_model else 1.0
    ref_o = spec.ref_output_tokens if spec.has_capacity_model else 1.0
    # rows after the first: row 0's gauges are the state the window starts from
    body = w[..., 1:, :] if w.shape[-2] > 1 else w
    dt = body[..., _I["interval_s"]]
    arrived = (body[..., _I["arrival_rps"]] * dt).sum(axis=-1)
    if w.shape[-2] > 1:
        d_wait = w[..., -1, _I["requests_waiting"]] - w[..., 0, _I["requests_waiting"]]
        d_run = w[..., -1, _I["requests_running"]] - w[..., 0, _I["requests_running"]]
    else:
        d_wait = d_run = np.zeros_like(arrived)
    prefilled = arrived - d_wait
    finished = prefilled - d_run
    p_tok = (body[..., _I["prompt_tokens_per_s"]] * dt).sum(axis=-1)
    o_tok = (body[..., _I["output_tokens_per_s"]] * dt).sum(axis=-1)

    def mean(tokens: np.ndarray, n: np.ndarray, ref: float) -> np.ndarray:
        ok = (n >= _MIN_REQUESTS_FOR_MIX) & (tokens > 0)
        est = tokens / np.where(ok, n, 1.0)
        return np.where(ok, np.clip(est, ref / _MIX_RANGE, ref * _MIX_RANGE), ref)

    return mean(p_tok, prefilled, ref_p), mean(o_tok, finished, ref_o)


def _mix_features(window: np.ndarray, spec: ObservationSpec) -> np.ndarray:
    isl, osl = request_mix(window, spec)
    w = np.nan_to_num(np.asarray(window, dtype=np.float64))
    p = (w[..., _I["prompt_tokens_per_s"]] * w[..., _I["interval_s"]]).sum(axis=-1)
    o = (w[..., _I["output_tokens_per_s"]] * w[..., _I["interval_s"]]).sum(axis=-1)
    share = np.where(p + o > 0, p / np.maximum(p + o, 1e-12), 0.0)
    if spec.has_capacity_model:
        lp = np.log2(isl / spec.ref_prompt_tokens)
        lo = np.log2(osl / spec.ref_output_tokens)
    else:
        lp = lo = np.zeros_like(isl)
    return np.stack([np.clip(lp, -1.0, 6.0), np.clip(lo, -1.0, 6.0), share], axis=-1)


def _finite_mean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite entries; NaN where there are none."""
    ok = np.isfinite(x)
    n = ok.sum(axis=-1)
    return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=-1) / np.maximum(n, 1), np.nan)


def encode_raw(
    window: np.ndarray, spec: ObservationSpec, arrivals: np.ndarray | None = None
) -> np.ndarray:
    """Encode raw metric windows, shape (..., spec.window, N_FIELDS), to float32 (..., obs_size).
    `arrivals` (..., R) is the arrival-rate history the history features read (`history_arrivals`;
    None: none observed, so they are 0), used only when the spec has history.

    NaN inputs (unobserved fields) encode as 0 for that feature, so a policy never sees NaN; the
    controller decides separately whether the window can be trusted at all.
    """
    w = np.asarray(window, dtype=np.float64)
    ready = np.maximum(w[..., _I["replicas_ready"]], 1.0)
    provisioned = np.maximum(
        w[..., _I["replicas_ready"]]
        + w[..., _I["replicas_starting"]]
        + w[..., _I["replicas_warm"]],
        1.0,
    )
    isl, osl = request_mix(w, spec)
    cap = capacity_at_mix(spec, isl, osl)[..., None]
    slots = knee_concurrency(spec, isl, osl)[..., None]
    arr = w[..., _I["arrival_rps"]]
    feats = np.stack(
        [
            arr / (cap * provisioned),
            arr / (cap * ready),
            w[..., _I["requests_waiting"]] / (slots * ready),
            w[..., _I["requests_running"]] / (slots * ready),
            w[..., _I["kv_cache_usage"]],
            w[..., _I["gpu_utilization_pct"]] / 100.0,
            np.log1p(w[..., _I["ttft_p95_s"]] / spec.ttft_slo_s),
            np.log1p(w[..., _I["tpot_p95_s"]] / spec.tpot_slo_s),
            w[..., _I["replicas_starting"]] / provisioned,
            w[..., _I["replicas_warm"]] / provisioned,
            provisioned / spec.max_replicas,
        ],
        axis=-1,
    )
    # Bound every feature: a 50x overload or a 10-minute TTFT is "very bad", not a new scale.
    feats = np.clip(np.nan_to_num(feats, nan=0.0, posinf=10.0, neginf=0.0), 0.0, 10.0)
    lead = feats.shape[:-2]
    flat = feats.reshape(*lead, -1)
    phase = 2.0 * np.pi * (np.nan_to_num(w[..., -1, _I["time_s"]]) % _DAY_S) / _DAY_S
    tod = np.stack([np.sin(phase), np.cos(phase)], axis=-1)
    parts = [flat, _mix_features(w, spec), tod]
    if spec.history_intervals:
        n = len(spec.history_intervals)
        parts.append(np.zeros((*lead, n)) if arrivals is None else history_features(arrivals, spec))
    return np.concatenate(parts, axis=-1).astype(np.float32)


def encode(window: Sequence[IntervalMetrics], spec: ObservationSpec) -> np.ndarray:
    """Encode the last `spec.window` intervals (oldest first). A shorter history is padded by
    repeating its oldest entry, as at the start of an episode; the history features read the
    intervals there are (`history_arrivals`), never padded ones."""
    return encode_raw(window_array(window, spec), spec, history_arrivals(window, spec))


def history_arrivals(window: Sequence[IntervalMetrics], spec: ObservationSpec) -> np.ndarray | None:
    """The arrival rates (R,) of the last `history_rows(spec)` intervals, oldest first, unpadded
    (None where the spec has no history)."""
    n = history_rows(spec)
    if n == 0:
        return None
    return np.array([m.arrival_rps for m in window[-n:]], dtype=np.float64)


def window_array(window: Sequence[IntervalMetrics], spec: ObservationSpec) -> np.ndarray:
    """The last `spec.window` intervals as an array (spec.window, N_FIELDS), padded as `encode`."""
    if not window:
        raise ValueError("encode needs at least one IntervalMetrics")
    rows = [m.to_array() for m in window[-spec.window :]]
    while len(rows) < spec.window:
        rows.insert(0, rows[0])
    return np.stack(rows)


# The queue counts as demand drained over this many seconds (a learned policy's action and the
# `target:U` rule read demand the same way).
DEMAND_DRAIN_S = 60.0


def slo_weight_at_target(
    targets: np.ndarray | float,
    grid: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """The SLO weight a target-knob checkpoint observes at SLO-attainment target(s) `targets`:
    its multiplier table (`grid` targets ascending, `weights` > 0; `envs.lagrange`) read
    log-linearly in log(1 - target), flat beyond the ends (callers refuse targets outside the
    trained range). The env prices episodes with it and the policy serves targets with it."""
    x = np.log(1.0 - np.asarray(grid, dtype=np.float64))[::-1]  # ascending for np.interp
    y = np.log(np.asarray(weights, dtype=np.float64))[::-1]
    return np.exp(np.interp(np.log(1.0 - np.asarray(targets, dtype=np.float64)), x, y))


def demand_rps(last: np.ndarray, drain_s: float) -> np.ndarray:
    """Demand of metrics rows (..., N_FIELDS): the arrival rate plus the queue drained over
    `drain_s` (unobserved counts as 0)."""
    return (
        np.nan_to_num(last[..., _I["arrival_rps"]])
        + np.nan_to_num(last[..., _I["requests_waiting"]]) / drain_s
    )


def demand_replicas(window: np.ndarray, spec: ObservationSpec, drain_s: float) -> np.ndarray:
    """Demand of metric windows (..., W, N_FIELDS) in replica-equivalents: the last interval's
    `demand_rps` over one replica's capacity at the window's request mix. Arrivals, not
    completions, so it reads true under overload (e.g. 3.4 req/s of 12k / 340-token requests on
    the 8B profile: 3.4 / 1.9 = 1.8 replicas, where 3.4 / 22.6 = 0.15 at the reference mix)."""
    w = np.asarray(window, dtype=np.float64)
    isl, osl = request_mix(w, spec)
    return demand_rps(w[..., -1, :], drain_s) / capacity_at_mix(spec, isl, osl)


def replicas_for_utilisation(
    demand: np.ndarray | np.floating, capacity_rps: float, u: np.ndarray | float
) -> np.ndarray:
    """The one target-utilisation rule: replicas = ceil(demand / (capacity x u)), used by the
    action map, the `target:U` policy and the checkpoint's fixed-u ablation alike."""
    return np.ceil(demand / (capacity_rps * u) - 1e-9)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """How a learned policy's action in [-1, 1]^2 becomes replica targets (shared by env and
    controller, so a checkpoint means the same thing in both).

    a[0] -> target utilisation u in [u_min, u_max] of the provisioned capacity for the current
            demand: replicas = ceil(demand_replicas / u), where demand_replicas is the arrival
            rate plus the queue drained over `drain_s`, over one replica's capacity at the
            observed request mix (`demand_replicas`; e.g. 90 rps + 300 waiting / 60 s = 95 rps;
            at 22 rps/replica and u = 0.8 -> ceil(5.4) = 6 replicas).
    a[1] -> warm pool size round((a[1] + 1) / 2 * max_warm).

    Calm: a proposal below the current target but within `hold_band` of it (current x (1 -
    hold_band) < proposal < current) keeps the current target. Noise of a few percent around a
    steady demand would otherwise move the fleet by one replica up and down every few intervals,
    each move a scale event and each way up a cold start. Scale-up is never held (the SLO).
    """

    u_min: float = 0.3
    u_max: float = 0.95
    drain_s: float = DEMAND_DRAIN_S
    max_warm: int = 0
    hold_band: float = 0.0

    def decode(
        self,
        action: np.ndarray,
        last: np.ndarray,
        spec: ObservationSpec,
        window: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """action (..., 2), last metrics rows (..., N_FIELDS) and, for the request mix, the
        window they end (..., W, N_FIELDS; default: the last row alone) -> (replicas, warm)."""
        a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64)), -1.0, 1.0)
        u = self.u_min + (self.u_max - self.u_min) * (a[..., 0] + 1.0) * 0.5
        rows = np.asarray(last, dtype=np.float64)[..., None, :] if window is None else window
        replicas = np.ceil(demand_replicas(rows, spec, self.drain_s) / u - 1e-9)
        if self.hold_band > 0:
            current = np.asarray(last, dtype=np.float64)[..., _I["replicas_desired"]]
            known = np.isfinite(current) & (current > 0)
            hold = known & (replicas < current) & (replicas > current * (1.0 - self.hold_band))
            replicas = np.where(hold, current, replicas)
        warm = np.rint((a[..., 1] + 1.0) * 0.5 * self.max_warm)
        return replicas, warm
