"""Static: a fixed replica count, what teams run without an autoscaler."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rlscale.contract import IntervalMetrics
from rlscale.policies.base import Decision
from rlscale.profiles.model import ServiceProfile
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
    workload: Workload, profile: ServiceProfile, *, interval_s: float = 60.0, target_utilisation: float = 0.8
) -> int:
    """Replicas that serve the workload's peak minute at `target_utilisation` of capacity
    (e.g. peak 120 rps / (22 rps x 0.8) = 6.8 -> 7)."""
    peak_rps = float(np.max(workload.rebin(interval_s).rate_rps))
    return max(1, math.ceil(peak_rps / (profile.capacity_rps() * target_utilisation)))
