"""Run policies on the simulator through the same clamps the controller uses, and summarise.

One rollout runs one policy on one workload for several seeds at once: the seeds are the batch of
one `ClusterSim` (each with its own policy instance), so the simulator's cost is paid once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlscale.contract import FIELD_INDEX, IntervalMetrics
from rlscale.envs.cluster import ClusterSim
from rlscale.policies.base import Policy
from rlscale.profiles.model import ServiceProfile
from rlscale.safety import ClampState, SafetyLimits, clamp_batch
from rlscale.serving.model import P_GRID, SimConfig
from rlscale.traces.workload import Workload

_F = FIELD_INDEX
_WEIGHTS = np.diff(P_GRID)  # probability mass between consecutive grid points

# The simulator's row before the first step has only the fleet, the clock and the opening arrival
# rate; its serving metrics were never observed. They are NaN there (the contract's "unobserved"),
# so a policy reads "no data" (the HPA holds, as it does when metrics are missing) instead of an
# idle service it would scale down at once.
UNOBSERVED_AT_START: tuple[str, ...] = (
    "prompt_tokens_per_s", "output_tokens_per_s", "requests_waiting", "requests_running", "kv_cache_usage",
    "gpu_utilization_pct", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s", "tpot_p50_s", "tpot_p95_s", "tpot_p99_s",
)


def pre_start_rows(metrics: np.ndarray) -> np.ndarray:
    """The simulator's pre-start rows (B, N_FIELDS) with the unobserved fields set to NaN."""
    rows = np.array(metrics, dtype=np.float64, copy=True)
    rows[:, [_F[f] for f in UNOBSERVED_AT_START]] = np.nan
    return rows


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Percentiles (0..1) of a weighted sample (flattened)."""
    v = np.ravel(values)
    w = np.ravel(weights)
    keep = w > 0
    if not keep.any():
        return [float("nan")] * len(qs)
    v, w = v[keep], w[keep]
    order = np.argsort(v)
    v, w = v[order], w[order]
    cum = np.cumsum(w) / w.sum()
    return [float(v[min(np.searchsorted(cum, q), len(v) - 1)]) for q in qs]


@dataclass
class RunSummary:
    """One policy on one workload with one seed: what the report prints."""

    policy: str
    workload: str
    profile: str
    seed: int
    gpu_hours: float
    cost_usd: float
    slo_attainment: float
    ttft_p50_s: float
    ttft_p95_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    tpot_p99_s: float
    requests: float
    dropped: float
    scale_events: int
    cold_starts: int
    mean_replicas: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d


@dataclass
class Rollout:
    summaries: list[RunSummary]
    timeline: np.ndarray  # (T, B, N_FIELDS) metrics per interval
    arrivals: np.ndarray  # (T, B)


def rollout(
    make_policy: Callable[[int], Policy],
    profile: ServiceProfile,
    workload: Workload,
    *,
    seeds: Sequence[int] = (0,),
    limits: SafetyLimits | None = None,
    config: SimConfig | None = None,
    window: int = 8,
    record: bool = False,
    initial_replicas: int | None = None,
) -> Rollout:
    """Run `make_policy(seed)` on `workload` for every seed; each decision passes `clamp_batch`."""
    cfg = config or SimConfig()
    limits = limits or SafetyLimits()
    b = len(seeds)
    # One generator for the batch, seeded by the seed list: every policy evaluated on the same
    # seeds meets the same cold-start pool.
    sim = ClusterSim(profile, [workload], batch=b, config=cfg, seed=int(np.sum(seeds)) * 7919 + b)
    if initial_replicas is not None:
        sim.reset(initial_replicas=initial_replicas)
    if initial_replicas is None:
        sim.ready[:] = np.clip(sim.ready, limits.min_replicas, limits.max_replicas)
        sim.metrics[:, _F["replicas_ready"]] = sim.ready
        sim.metrics[:, _F["replicas_desired"]] = sim.ready
    policies = [make_policy(int(s)) for s in seeds]
    for p in policies:
        p.reset()
    state = ClampState.empty(b, limits, cfg.interval_s)
    first = pre_start_rows(sim.metrics)
    history: list[list[IntervalMetrics]] = [[IntervalMetrics.from_array(first[i])] for i in range(b)]
    current = sim.ready.copy()
    steps = int(sim.t_end.max() - sim.t.min())
    tl = np.zeros((steps, b, sim.metrics.shape[1])) if record else None
    arrivals = np.zeros((steps, b))
    ttft_q = np.zeros((steps, b, len(P_GRID)))
    tpot_q = np.zeros((steps, b, len(P_GRID)))
    proposed = np.zeros(b)
    warm = np.zeros(b)
    manages_warm = False
    for step in range(steps):
        now = float(sim.metrics[0, _F["time_s"]])
        for i, p in enumerate(policies):
            d = p.decide(history[i])
            proposed[i] = d.replicas
            if d.warm_replicas is not None:
                manages_warm = True
                warm[i] = min(max(d.warm_replicas, 0), limits.max_warm_replicas)
        target, _ = clamp_batch(proposed, current, now, limits, state, warm=warm)
        current = target.astype(np.float64)
        m = sim.step(current, warm if manages_warm else None)
        arrivals[step] = sim.last_arrivals
        ttft_q[step] = sim.last.ttft_q
        tpot_q[step] = sim.last.tpot_q
        if tl is not None:
            tl[step] = m
        for i in range(b):
            h = history[i]
            h.append(IntervalMetrics.from_array(m[i]))
            if len(h) > window:
                del h[0]
    tot = sim.totals
    summaries = []
    for i, seed in enumerate(seeds):
        w = arrivals[:, i, None] * _WEIGHTS[None, :]
        # pool each interval's quantile grid (midpoints of grid cells) weighted by its arrivals
        tq = 0.5 * (ttft_q[:, i, 1:] + ttft_q[:, i, :-1])
        pq = 0.5 * (tpot_q[:, i, 1:] + tpot_q[:, i, :-1])
        t50, t95, t99 = weighted_percentiles(tq, w, (0.5, 0.95, 0.99))
        p50, p95, p99 = weighted_percentiles(pq, w, (0.5, 0.95, 0.99))
        arrived = float(tot.arrived[i])
        summaries.append(
            RunSummary(
                policy=policies[i].name,
                workload=workload.name,
                profile=profile.name,
                seed=int(seed),
                gpu_hours=float(tot.gpu_hours[i]),
                cost_usd=float(tot.cost_usd[i]),
                slo_attainment=float(tot.slo_ok[i] / arrived) if arrived > 0 else 1.0,
                ttft_p50_s=t50, ttft_p95_s=t95, ttft_p99_s=t99,
                tpot_p50_s=p50, tpot_p95_s=p95, tpot_p99_s=p99,
                requests=arrived,
                dropped=float(tot.dropped[i]),
                scale_events=int(tot.scale_events[i]),
                cold_starts=int(tot.cold_starts[i]),
                mean_replicas=float(tot.replica_intervals[i] / max(steps, 1)),
            )
        )
    return Rollout(summaries=summaries, timeline=tl if tl is not None else np.zeros((0, b, 0)), arrivals=arrivals)
