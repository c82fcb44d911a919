"""Static: a fixed replica count, what teams run without an autoscaler."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rlscale.contract import DEFAULT_SLO_TARGET, IntervalMetrics
from rlscale.policies.base import Decision

if TYPE_CHECKING:
    from rlscale.profiles.model import ServiceProfile
    from rlscale.serving.model import SimConfig
    from rlscale.traces.workload import Workload


class StaticPolicy:
    def __init__(self, replicas: int) -> None:
        if replicas < 0:
            raise ValueError(f"static replicas must be >= 0, got {replicas}")
        self.replicas = int(replicas)
        self.name = "static"

    def reset(self) -> None:
        pass

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        return Decision(self.replicas, f"static: fixed at {self.replicas}")


def replicas_for_peak(
    workload: Workload,
    profile: ServiceProfile,
    config: SimConfig,
    slo_target: float = DEFAULT_SLO_TARGET,
) -> int:
    """Replicas that serve the workload's peak minute within the SLO, the sizing a team does from
    last month's peak (e.g. 250 req/s peak / 21 req/s per replica within the SLO = 11.9 -> 12)."""
    from rlscale.serving.capacity import slo_capacity_rps

    w = workload.rebin(max(60.0, config.interval_s))
    peak = float(np.max(w.rate_rps))
    arrived = float(w.arrivals.sum())
    isl = float((w.prompt_tokens * w.arrivals).sum() / arrived) if arrived > 0 else None
    osl = float((w.output_tokens * w.arrivals).sum() / arrived) if arrived > 0 else None
    guess = 1
    for _ in range(3):  # per-replica capacity depends (weakly) on the fleet size
        cap = slo_capacity_rps(
            profile,
            isl,
            osl,
            replicas=guess,
            slo_target=slo_target,
            prompt_cv=workload.prompt_tokens_cv,
            ttft_slo_s=config.ttft_slo_s,
            tpot_slo_s=config.tpot_slo_s,
            arrival_scv=config.arrival_scv,
            ttft_slo_s_per_1k_tokens=config.ttft_slo_s_per_1k_tokens,
        )
        guess = max(1, math.ceil(peak / cap - 1e-9))
    return guess
