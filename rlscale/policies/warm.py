"""A fixed warm pool for any policy: `KIND#warm=N` holds the standby pool at N beside the rule's
replica count, as `ppo:PATH#warm=N` does for a checkpoint (its `fixed_warm`). The seed system's
baseline is "keep 2 warm" (`SEED_WARM_POOL`); what a pool member is (a sleeping replica, a warm
or a preloaded node) is the cluster's, `SimConfig.standby_tier`."""

from __future__ import annotations

from collections.abc import Sequence

from rlscale.contract import IntervalMetrics
from rlscale.policies.base import Decision, Policy
from rlscale.safety import SafetyLimits

SEED_WARM_POOL = 2


class FixedWarmPool:
    """`inner`'s decisions with `warm_replicas = n` (the replica count and its reason kept)."""

    def __init__(self, inner: Policy, n: int) -> None:
        self.inner = inner
        self.n = int(n)
        self.name = inner.name

    def reset(self) -> None:
        self.inner.reset()

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        d = self.inner.decide(window)
        return Decision(d.replicas, f"{d.reason}, warm pool {self.n}", self.n)


def limits_with_pool(limits: SafetyLimits, n: int) -> SafetyLimits:
    """The limits widened to let a pool of n stand by (as `load_policy` does for `warm=N`)."""
    return limits.model_copy(update={"max_warm_replicas": max(limits.max_warm_replicas, int(n))})
