"""Run policies on the simulator through the same clamps the controller uses, and summarise.

The one rollout loop: `run_batch` steps a batch of `Run`s (each a policy under its own limits on
one of the workloads) in one `ClusterSim`, through `ClampedFleet` (start within the limits,
clamp, step), so the simulator's cost is paid once for the batch. `rollout` is the common case
(one policy, one workload, several seeds); the tuner scores K rules x n workloads with
`run_batch` directly (`rlscale.training.tune.evaluate_batch`).

A run may carry a run-time shield (`rlscale.serving.shield`); `rollout` gives learned policies
the default one and rules none (`shield="auto"`). Each summary counts the shield's firings by
kind (`shield_floor`, `shield_queue`, `shield_consolidation`, `shield_handover`; zeros unshielded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rlscale.contract import FIELD_INDEX, IntervalMetrics
from rlscale.envs.cluster import ClusterSim

if TYPE_CHECKING:
    from rlscale.envs.requests import RequestSim, RequestTrace
from rlscale.envs.fleet import ClampedFleet
from rlscale.policies.base import Policy
from rlscale.profiles.model import ServiceProfile
from rlscale.safety import SafetyLimits
from rlscale.serving.model import P_GRID, SimConfig, pooled_percentiles
from rlscale.serving.shield import ShieldConfig, default_shield
from rlscale.traces.workload import Workload

_F = FIELD_INDEX

# The simulator's row before the first step has only the fleet, the clock and the opening arrival
# rate; its serving metrics were never observed. They are NaN there (the contract's "unobserved"),
# so a policy reads "no data" (the HPA holds, as it does when metrics are missing) instead of an
# idle service it would scale down at once.
UNOBSERVED_AT_START: tuple[str, ...] = (
    "prompt_tokens_per_s",
    "output_tokens_per_s",
    "requests_waiting",
    "requests_running",
    "kv_cache_usage",
    "gpu_utilization_pct",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p95_s",
    "tpot_p99_s",
)


def pre_start_rows(metrics: np.ndarray) -> np.ndarray:
    """The simulator's pre-start rows (B, N_FIELDS) with the unobserved fields set to NaN."""
    rows = np.array(metrics, dtype=np.float64, copy=True)
    rows[:, [_F[f] for f in UNOBSERVED_AT_START]] = np.nan
    return rows


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


@dataclass(frozen=True)
class Run:
    """One cluster of a batched rollout: a policy, the limits that clamp it, the index of its
    workload, and the seed its summary is labelled with."""

    policy: Policy
    limits: SafetyLimits
    workload: int = 0
    seed: int = 0
    shield: ShieldConfig | None = None  # None: unshielded


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
    engine: str = "fluid",
    requests: RequestTrace | None = None,
    shield: ShieldConfig | None | str = "auto",
) -> Rollout:
    """Run `make_policy(seed)` on `workload` for every seed; each decision passes `clamp_batch`.
    `engine="requests"` serves it request by request (`requests`, when given, replays those
    requests; otherwise they are synthesised from the workload's bins). `shield`: a config, None
    (off) or "auto" (`default_shield` of the factory's spec: on for `ppo:`, off for rules).
    Each decision sees the last `window` intervals, or more where the factory reads more
    (`PolicyFactory.window`: a PPO checkpoint's observation window, 12 intervals for the shipped
    ones). Until 2026-12-04 every rollout passed 8, so a checkpoint trained on 12 was evaluated on
    8 intervals and 4 padded copies while the controller served it 12."""
    lim = limits or SafetyLimits()
    window = max(window, int(getattr(make_policy, "window", 1)))
    cfg_shield = shield_for(make_policy) if isinstance(shield, str) else shield
    runs = [Run(make_policy(int(s)), lim, 0, int(s), cfg_shield) for s in seeds]
    # One generator for the batch, seeded by the seed list: every policy evaluated on the same
    # seeds meets the same cold-start pool.
    sim_seed = int(np.sum(seeds)) * 7919 + len(seeds)
    return run_batch(
        runs,
        profile,
        [workload],
        sim_seed=sim_seed,
        config=config,
        window=window,
        record=record,
        initial_replicas=initial_replicas,
        engine=engine,
        requests=requests,
    )


def shield_for(make_policy: Callable[[int], Policy]) -> ShieldConfig | None:
    """The default shield of a policy factory: by the kind of its spec (`PolicyFactory.spec`,
    e.g. "ppo:PATH"); a bare callable has no kind and runs unshielded."""
    spec = getattr(make_policy, "spec", None)
    if not isinstance(spec, str):
        return None
    return default_shield(spec.split("#", 1)[0].split(":", 1)[0].strip().lower())


# The serving engines a rollout can run on: the fluid model (fast, what training uses) and the
# request-level engine (the reference it is held to, `benchmarks/fidelity.py`).
ENGINES: tuple[str, ...] = ("fluid", "requests")


def run_batch(
    runs: Sequence[Run],
    profile: ServiceProfile,
    workloads: Sequence[Workload],
    *,
    sim_seed: int,
    config: SimConfig | None = None,
    window: int = 8,
    record: bool = False,
    initial_replicas: int | Sequence[int] | np.ndarray | None = None,
    engine: str = "fluid",
    requests: RequestTrace | None = None,
) -> Rollout:
    """Step every run in one batched simulator seeded with `sim_seed`; returns one summary per run.

    Each run starts from `initial_replicas` (one count, or one per run) as given, or by default
    from the simulator's guess for its workload's first interval clipped into the run's limits.
    Each policy sees the last `window` intervals (the first is the pre-start row, with its
    serving metrics unobserved) and every decision passes its run's safety clamps."""
    cfg = config or SimConfig()
    b = len(runs)
    wid = np.array([r.workload for r in runs], dtype=np.int64)
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}, expected one of {ENGINES}")
    sim: ClusterSim | RequestSim
    if engine == "fluid":
        sim = ClusterSim(profile, workloads, batch=b, config=cfg, seed=sim_seed)
    else:
        from rlscale.envs.requests import RequestSim

        replay: list[Workload | RequestTrace] = (
            [requests] if requests is not None else list(workloads)
        )
        sim = RequestSim(profile, replay, batch=b, config=cfg, seed=sim_seed)
    # The constructor's reset gives cluster b workload b % n; another reset is only made when
    # needed, since it redraws the cold-start pool.
    if initial_replicas is not None or not np.array_equal(wid, np.arange(b) % len(workloads)):
        init = None if initial_replicas is None else np.asarray(initial_replicas, dtype=np.float64)
        sim.reset(workload_index=wid, initial_replicas=init)
    fleet = ClampedFleet(sim, [r.limits for r in runs], [r.shield for r in runs])
    fleet.start(clip=initial_replicas is None)
    policies = [r.policy for r in runs]
    for p in policies:
        p.reset()
    first = pre_start_rows(sim.metrics)
    history: list[list[IntervalMetrics]] = [
        [IntervalMetrics.from_array(first[i])] for i in range(b)
    ]
    steps = int(sim.t_end.max() - sim.t.min())
    tl = np.zeros((steps, b, sim.metrics.shape[1])) if record else None
    arrivals = np.zeros((steps, b))
    served = np.zeros((steps, b))
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
                warm[i] = d.warm_replicas
        m = fleet.step(proposed, now, warm if manages_warm else None)
        arrivals[step] = sim.last_arrivals
        # the latency quantiles are over the requests they describe: the interval's arrivals in
        # the fluid model, its first tokens in the request-level engine
        served[step] = sim.last_arrivals if engine == "fluid" else sim.last.started
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
    fired = fleet.shield_counts()
    summaries = []
    for i, run in enumerate(runs):
        # pool the intervals' quantile grids (each linear between its grid points), weighted by
        # the requests they describe
        t50, t95, t99 = pooled_percentiles(ttft_q[:, i], served[:, i], (0.5, 0.95, 0.99))
        p50, p95, p99 = pooled_percentiles(tpot_q[:, i], served[:, i], (0.5, 0.95, 0.99))
        arrived = float(tot.arrived[i])
        summaries.append(
            RunSummary(
                policy=policies[i].name,
                workload=workloads[run.workload].name,
                profile=profile.name,
                seed=run.seed,
                gpu_hours=float(tot.gpu_hours[i]),
                cost_usd=float(tot.cost_usd[i]),
                slo_attainment=float(tot.slo_ok[i] / arrived) if arrived > 0 else 1.0,
                ttft_p50_s=t50,
                ttft_p95_s=t95,
                ttft_p99_s=t99,
                tpot_p50_s=p50,
                tpot_p95_s=p95,
                tpot_p99_s=p99,
                requests=arrived,
                dropped=float(tot.dropped[i]),
                scale_events=int(tot.scale_events[i]),
                cold_starts=int(tot.cold_starts[i]),
                mean_replicas=float(tot.replica_intervals[i] / max(steps, 1)),
                extra={"shield": run.shield is not None, **fired[i]},
            )
        )
    return Rollout(
        summaries=summaries,
        timeline=tl if tl is not None else np.zeros((0, b, 0)),
        arrivals=arrivals,
    )
