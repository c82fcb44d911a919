"""Target utilisation: replicas = ceil(demand / (capacity x u)) with u held constant, the
target-tracking autoscaler a learned policy's action space holds constant (`target:U`).

It is the learned policy's action map with a fixed action, so it is the baseline that shows what
the network adds beyond the action design.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlscale.contract import DEMAND_DRAIN_S, IntervalMetrics, demand_rps, replicas_for_utilisation
from rlscale.policies.base import Decision


class TargetUtilisationPolicy:
    def __init__(self, u: float, capacity_rps: float, drain_s: float = DEMAND_DRAIN_S) -> None:
        if not 0 < u <= 1:
            raise ValueError(f"target utilisation must be in (0, 1], got {u}")
        self.u, self.capacity_rps, self.drain_s = float(u), float(capacity_rps), float(drain_s)
        self.name = f"target:{u:g}"

    def reset(self) -> None:
        pass

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        last = window[-1].to_array()
        demand = float(demand_rps(last, self.drain_s))
        replicas = max(
            0, int(replicas_for_utilisation(np.float64(demand), self.capacity_rps, self.u))
        )
        return Decision(
            replicas,
            f"{self.name}: demand {demand:.1f} rps / ({self.capacity_rps:.1f} x {self.u:g}) = {replicas}",
        )
