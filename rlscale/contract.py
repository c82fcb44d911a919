"""The record shared by the simulator and the live controller, and the one observation encoder.

`IntervalMetrics` is what one control interval looked like, in units a Prometheus query can
produce. The simulator fills it from its state (`rlscale.envs.cluster`), the controller from
PromQL (`rlscale.deploy`). `encode` turns a window of them into the policy's observation; the
batched simulator calls `encode_raw` on the same numbers laid out as an array, so there is one
encoder, not two that drift apart.

The observation is normalised per replica (load per provisioned replica, queue per ready replica,
latency over its SLO), so one policy can serve a 2-replica service and a 40-replica one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields

import numpy as np

CONTRACT_VERSION = 1

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
        return np.asarray(astuple(self), dtype=np.float64)

    @classmethod
    def from_array(cls, row: np.ndarray) -> IntervalMetrics:
        return cls(*(float(x) for x in row))

    def has_nan(self) -> list[str]:
        """Names of the fields that are NaN (unobserved)."""
        return [f for f, v in zip(FIELDS, astuple(self), strict=True) if math.isnan(v)]


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(IntervalMetrics))
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(FIELDS)}
N_FIELDS = len(FIELDS)


@dataclass(frozen=True, slots=True)
class ObservationSpec:
    """What the encoder needs to normalise: per-replica capacity and the SLO.

    `replica_capacity_rps` is the request rate one ready replica sustains at its KV-cache knee for
    the profile's typical request (from `ServiceProfile.capacity_rps`); `max_batch` its max
    concurrent requests. A checkpoint records these with the contract version.
    """

    replica_capacity_rps: float
    max_batch: float
    ttft_slo_s: float
    tpot_slo_s: float
    max_replicas: float
    window: int = 4


# Features per interval in the window, in order. A checkpoint stores this list; loading refuses
# a different one (see rlscale.policies.checkpoint).
FEATURES_PER_STEP: tuple[str, ...] = (
    "load_per_provisioned_replica",  # arrival_rps / (capacity * (ready + starting + warm))
    "load_per_ready_replica",  # arrival_rps / (capacity * ready)
    "queue_per_ready_replica",  # waiting / (max_batch * ready)
    "running_per_ready_replica",  # running / (max_batch * ready)
    "kv_cache_usage",
    "gpu_utilization",
    "ttft_p95_over_slo",  # log1p-compressed
    "tpot_p95_over_slo",
    "starting_share",  # starting / provisioned
    "warm_share",
    "fleet_fraction",  # provisioned / max_replicas
)


def feature_names(spec: ObservationSpec) -> list[str]:
    names = [f"t-{lag}:{f}" for lag in range(spec.window - 1, -1, -1) for f in FEATURES_PER_STEP]
    return names + ["time_of_day_sin", "time_of_day_cos"]


def observation_size(spec: ObservationSpec) -> int:
    return spec.window * len(FEATURES_PER_STEP) + 2


_I = FIELD_INDEX
_DAY_S = 86_400.0


def encode_raw(window: np.ndarray, spec: ObservationSpec) -> np.ndarray:
    """Encode raw metric windows, shape (..., spec.window, N_FIELDS), to float32 (..., obs_size).

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
    cap = spec.replica_capacity_rps
    arr = w[..., _I["arrival_rps"]]
    feats = np.stack(
        [
            arr / (cap * provisioned),
            arr / (cap * ready),
            w[..., _I["requests_waiting"]] / (spec.max_batch * ready),
            w[..., _I["requests_running"]] / (spec.max_batch * ready),
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
    phase = 2.0 * np.pi * (w[..., -1, _I["time_s"]] % _DAY_S) / _DAY_S
    tod = np.stack([np.sin(phase), np.cos(phase)], axis=-1)
    return np.concatenate([flat, tod], axis=-1).astype(np.float32)


def encode(window: Sequence[IntervalMetrics], spec: ObservationSpec) -> np.ndarray:
    """Encode the last `spec.window` intervals (oldest first). A shorter history is padded by
    repeating its oldest entry, as at the start of an episode."""
    if not window:
        raise ValueError("encode needs at least one IntervalMetrics")
    rows = [m.to_array() for m in window[-spec.window :]]
    while len(rows) < spec.window:
        rows.insert(0, rows[0])
    return encode_raw(np.stack(rows), spec)


# The queue counts as demand drained over this many seconds (a learned policy's action and the
# `target:U` rule read demand the same way).
DEMAND_DRAIN_S = 60.0


def demand_rps(last: np.ndarray, drain_s: float) -> np.ndarray:
    """Demand of metrics rows (..., N_FIELDS): the arrival rate plus the queue drained over
    `drain_s` (unobserved counts as 0)."""
    return (
        np.nan_to_num(last[..., _I["arrival_rps"]])
        + np.nan_to_num(last[..., _I["requests_waiting"]]) / drain_s
    )


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
            demand: replicas = ceil(demand_rps / (capacity_rps * u)), where demand_rps is the
            arrival rate plus the queue drained over `drain_s` (e.g. 90 rps + 300 waiting / 60 s
            = 95 rps; at 22 rps/replica and u = 0.8 -> ceil(5.4) = 6 replicas).
    a[1] -> warm pool size round((a[1] + 1) / 2 * max_warm).
    """

    u_min: float = 0.3
    u_max: float = 0.95
    drain_s: float = DEMAND_DRAIN_S
    max_warm: int = 0

    def decode(
        self, action: np.ndarray, last: np.ndarray, spec: ObservationSpec
    ) -> tuple[np.ndarray, np.ndarray]:
        """action (..., 2), last metrics rows (..., N_FIELDS) -> (replicas, warm) float arrays."""
        a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64)), -1.0, 1.0)
        u = self.u_min + (self.u_max - self.u_min) * (a[..., 0] + 1.0) * 0.5
        demand = demand_rps(last, self.drain_s)
        replicas = replicas_for_utilisation(demand, spec.replica_capacity_rps, u)
        warm = np.rint((a[..., 1] + 1.0) * 0.5 * self.max_warm)
        return replicas, warm
