"""The capacity rule: the run-time shield on its own, with no policy behind it (`capacity`).

The shield (`rlscale.serving.shield`) bounds a learned policy's proposal: on scale-up a floor at
`floor_utilisation` of the fleet's SLO capacity at the observed request mix, before scale-down a
consolidation check (the survivors carry the last minute's peak at
`consolidation_utilisation`), a queue check and a hand-over after breached intervals. Given a
proposal of 0 every interval, what is left is a rule: scale up to the floor when demand needs
it, scale down as far as the consolidation check allows, hold in between (the band between the
two utilisations is its hysteresis). It is token-aware and pools the fleet's capacity, as the
shield does.

It is here because it is the baseline a learned policy behind the shield must beat: on the four
test windows (2026-12-04, 5 seeds, the checkpoints' clamps) this rule cost at most 0.1 % more
than the shipped PPO checkpoints behind the same shield, and up to 5 % less, within 0.16 points
of their SLO (`training/README.md`, "The shield on its own"). The same code runs: one `Shield` instance per policy, `apply(0, current,
row)` per decision, so a firing reason is a `Decision` reason here as it is in the controller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rlscale.contract import IntervalMetrics
from rlscale.policies.base import Decision
from rlscale.profiles.model import ServiceProfile
from rlscale.safety import ScalingPolicy, ScalingRules
from rlscale.serving.shield import FIRING_REASONS, Shield, ShieldConfig

# The shipped checkpoints' scale-down clamp (training/*.yaml: only to the highest proposal of the
# last 120 s, at most 10 % a minute), so the rule and the learned policies it shields move at
# the same pace and a comparison of the two is a comparison of their decisions.
SCALE_DOWN = ScalingRules(
    stabilization_window_s=120.0,
    policies=(ScalingPolicy(type="Percent", value=10.0, period_s=60.0),),
)


class CapacityPolicy:
    """The shield's rule for one target: `config` its utilisations; the SLO it sizes for."""

    def __init__(
        self,
        profile: ServiceProfile,
        config: ShieldConfig,
        *,
        interval_s: float,
        ttft_slo_s: float,
        tpot_slo_s: float,
        ttft_slo_s_per_1k_tokens: float = 0.0,
        name: str = "capacity",
    ) -> None:
        self.name = name
        self.shield = Shield(
            config,
            profile,
            1,
            interval_s=interval_s,
            ttft_slo_s=ttft_slo_s,
            tpot_slo_s=tpot_slo_s,
            ttft_slo_s_per_1k_tokens=ttft_slo_s_per_1k_tokens,
        )

    def reset(self) -> None:
        self.shield.reset()

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        if not window:
            raise ValueError("decide needs at least one IntervalMetrics")
        m = window[-1]
        current = m.replicas_desired if math.isfinite(m.replicas_desired) else m.replicas_ready
        current = max(0.0, current) if math.isfinite(current) else 0.0
        r = self.shield.apply(np.zeros(1), np.array([current]), m.to_array()[None, :])
        target = int(r.target[0])
        if target == current:
            why = f"hold {target}"
        else:
            why = f"{FIRING_REASONS[int(r.fired[0])] or 'down'} {current:.0f} -> {target}"
        return Decision(
            target,
            f"{self.name}: {why} (floor {r.floor[0]:.0f} at {r.capacity_rps[0]:.2f} req/s a replica)",
        )
