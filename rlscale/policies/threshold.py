"""Threshold rule: the autoscaler teams write by hand before they reach for the HPA.

Scale up by `step_up` when GPU utilisation > 70 % or the queue per ready replica > 20; scale down
by `step_down` when utilisation < 30 % and the queue per ready replica < 5; otherwise hold. After
any change, hold for `cooldown_s` (300 s), so a replica that is still starting is not followed
by another one for the same load. Bounds are min 2, max 20. Every value is configurable.

GPU utilisation is `DCGM_FI_DEV_GPU_UTIL`, the share of time a kernel runs: near 100 % as soon as a
continuous-batching server holds a few requests, so this rule tends to ratchet up (the point of
having it as a baseline: it is what the signal invites).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.config import load_yaml_model
from rlscale.contract import IntervalMetrics
from rlscale.policies.base import Decision
from rlscale.safety import SafetyLimits


class ThresholdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    gpu_up_pct: float = Field(default=70.0, ge=0, le=100)
    queue_up_per_replica: float = Field(default=20.0, ge=0)
    gpu_down_pct: float = Field(default=30.0, ge=0, le=100)
    queue_down_per_replica: float = Field(default=5.0, ge=0)
    step_up: int = Field(default=1, ge=1)
    step_down: int = Field(default=1, ge=1)
    cooldown_s: float = Field(default=300.0, ge=0)
    min_replicas: int = Field(default=2, ge=0)
    max_replicas: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas = {self.max_replicas}, must be >= min_replicas ({self.min_replicas})"
            )
        if self.gpu_down_pct > self.gpu_up_pct:
            raise ValueError(
                f"gpu_down_pct = {self.gpu_down_pct}, must be <= gpu_up_pct ({self.gpu_up_pct})"
            )
        if self.queue_down_per_replica > self.queue_up_per_replica:
            raise ValueError(
                f"queue_down_per_replica = {self.queue_down_per_replica}, must be <= queue_up_per_replica "
                f"({self.queue_up_per_replica})"
            )
        return self

    @classmethod
    def load(cls, path: str | Path) -> ThresholdConfig:
        return load_yaml_model(path, cls, what="threshold rule config")


class ThresholdPolicy:
    """`ThresholdConfig` as a `Policy`. Stateful: remembers when it last changed the scale."""

    def __init__(self, config: ThresholdConfig | None = None, name: str = "threshold") -> None:
        self.config = config or ThresholdConfig()
        self.name = name
        self.limits = SafetyLimits(
            min_replicas=self.config.min_replicas, max_replicas=self.config.max_replicas
        )
        self._last_change_s = -math.inf

    def reset(self) -> None:
        self._last_change_s = -math.inf

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        c = self.config
        m = window[-1]
        current = (
            int(round(m.replicas_desired))
            if math.isfinite(m.replicas_desired)
            else int(m.replicas_ready)
        )
        now = m.time_s
        ready = max(m.replicas_ready, 1.0)
        gpu = m.gpu_utilization_pct
        queue = m.requests_waiting / ready
        if not (math.isfinite(gpu) and math.isfinite(queue)):
            return Decision(current, f"threshold: metrics unavailable, holding {current}")
        if now - self._last_change_s < c.cooldown_s:
            left = c.cooldown_s - (now - self._last_change_s)
            return Decision(
                current, f"threshold: cooling down ({left:.0f} s left), holding {current}"
            )
        target = current
        if gpu > c.gpu_up_pct or queue > c.queue_up_per_replica:
            target = min(current + c.step_up, c.max_replicas)
            why = (
                f"gpu {gpu:.0f}% > {c.gpu_up_pct:g}"
                if gpu > c.gpu_up_pct
                else f"queue {queue:.1f}/replica > {c.queue_up_per_replica:g}"
            )
        elif gpu < c.gpu_down_pct and queue < c.queue_down_per_replica:
            target = max(current - c.step_down, c.min_replicas)
            why = f"gpu {gpu:.0f}% < {c.gpu_down_pct:g} and queue {queue:.1f}/replica < {c.queue_down_per_replica:g}"
        else:
            why = f"gpu {gpu:.0f}%, queue {queue:.1f}/replica within thresholds"
        target = min(max(target, c.min_replicas), c.max_replicas)
        if target != current:
            self._last_change_s = now
        return Decision(target, f"threshold: {why} -> {target}")
