"""Target utilisation: replicas = ceil(demand_replicas / u) with u held constant, the
target-tracking autoscaler a learned policy's action space holds constant (`target:U`).

It is the learned policy's action map with a fixed action, so it is the baseline that shows what
the network adds beyond the action design. Demand is read as the action map reads it
(`contract.demand_replicas`): the arrival rate plus the queue drained over `drain_s`, in
replicas at the request mix of the window (8B profile: 3.4 req/s of 12k / 340-token requests
is 3.4 / 1.9 = 1.8 replicas, not the 3.4 / 22.6 = 0.15 a fixed request rate per replica gives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlscale.contract import (
    DEMAND_DRAIN_S,
    FIELD_INDEX,
    IntervalMetrics,
    ObservationSpec,
    demand_replicas,
    replicas_for_utilisation,
    request_mix,
)
from rlscale.policies.base import Decision

# Intervals the request mix is read over: the learned policy's default observation window
# (`EnvConfig.window`), one minute at 15 s.
MIX_WINDOW = 4
_TOKEN_FIELDS = [FIELD_INDEX["prompt_tokens_per_s"], FIELD_INDEX["output_tokens_per_s"]]


class TargetUtilisationPolicy:
    """`spec` is the capacity model (`serving.capacity.observation_spec`); its `window` is how
    many intervals the request mix is read over."""

    def __init__(self, u: float, spec: ObservationSpec, drain_s: float = DEMAND_DRAIN_S) -> None:
        if not 0 < u <= 1:
            raise ValueError(f"target utilisation must be in (0, 1], got {u}")
        self.u, self.spec, self.drain_s = float(u), spec, float(drain_s)
        self.name = f"target:{u:g}"

    def reset(self) -> None:
        pass

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        if not window:
            raise ValueError("decide needs at least one IntervalMetrics")
        # The mix is read over the history there is, never padded: a padded window says the
        # batch did not grow, and while it fills at the start of a run the output tokens per
        # finished request read ~20 % short (167 for 211 on the 8B profile), the fleet one
        # replica short in its first minute, 0.5 points of SLO lost on a 12-hour window. One
        # interval shows no change of the batch at all: its tokens count as unobserved, which
        # `request_mix` reads as the reference request, until a second interval.
        rows = np.stack([m.to_array() for m in window[-self.spec.window :]])
        if len(rows) < 2:
            rows[:, _TOKEN_FIELDS] = np.nan
        demand = float(demand_replicas(rows, self.spec, self.drain_s))
        replicas = max(0, int(replicas_for_utilisation(np.float64(demand), 1.0, self.u)))
        isl, osl = request_mix(rows, self.spec)
        return Decision(
            replicas,
            f"{self.name}: demand {demand:.2f} replicas at {float(isl):.0f} / {float(osl):.0f} "
            f"tokens per request / {self.u:g} = {replicas}",
        )
