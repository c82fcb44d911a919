"""The operator's SLO-attainment target as the knob (issue 13, item 5): a constrained objective by
dual ascent, one Lagrange multiplier per target on a grid.

Training maximises -(cost + lambda x violating requests) subject to "attainment >= target". Each
episode samples a target tau (log-uniform in the miss budget 1 - tau over `range`); its reward's
SLO weight is lambda(tau), read off a table of multipliers on `points` targets (log lambda linear
in log(1 - tau)), and the policy observes log lambda(tau): the existing knob feature, so a
target checkpoint is served by the same forward pass as a weight checkpoint. Every `every_steps`
steps each grid point's multiplier moves by

    log lambda_k += lr x clip(log((misses_k + 0.1 budget_k) / budget_k), -1, 1)

where misses_k is the share of requests that missed the SLO over those steps in the episodes whose
target is nearest to point k and budget_k = 1 - tau_k: up while the policy misses more than the
target allows, down while it has headroom (a multiplicative step, because the right lambda spans
orders of magnitude between 0.95 and 0.999). The table is kept non-decreasing in tau (a stricter
target never costs less), saved in the checkpoint (`slo_multipliers`), and `ppo:PATH#slo_target=T`
serves the policy at lambda(T): the operator states a target, not a price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.contract import slo_weight_at_target


class SLOTargetKnob(BaseModel):
    """`env.slo_target` in a training config: the target range and the dual ascent's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    range: tuple[float, float] = (0.95, 0.999)
    points: int = Field(default=6, ge=2, le=32)  # grid targets, log-spaced in the miss budget
    lr: float = Field(default=0.05, gt=0, le=1)  # step of log lambda per update at full clip
    every_steps: int = Field(default=128, ge=1)  # env steps between updates (one PPO rollout)
    initial_weight: float = Field(default=10.0, gt=0)
    weight_bounds: tuple[float, float] = (0.01, 1000.0)

    @model_validator(mode="after")
    def _ordered(self) -> SLOTargetKnob:
        lo, hi = self.range
        if not 0.0 < lo < hi < 1.0:
            raise ValueError(f"range must satisfy 0 < low < high < 1, got [{lo:g}, {hi:g}]")
        wlo, whi = self.weight_bounds
        if not 0.0 < wlo < self.initial_weight < whi:
            raise ValueError(
                f"weight_bounds [{wlo:g}, {whi:g}] must hold initial_weight {self.initial_weight:g}"
            )
        return self

    def grid(self) -> np.ndarray:
        """The grid's targets, ascending."""
        lo, hi = self.range
        return 1.0 - np.geomspace(1.0 - lo, 1.0 - hi, self.points)


class SLOMultipliers:
    """The multiplier table over B episodes: sample targets, price them, learn the prices."""

    def __init__(self, knob: SLOTargetKnob, batch: int) -> None:
        self.knob = knob
        self.targets = knob.grid()
        self.log_weight = np.full(knob.points, math.log(knob.initial_weight))
        self.episode_target = np.full(batch, float(self.targets[len(self.targets) // 2]))
        self._point = np.zeros(batch, dtype=np.int64)
        self._misses = np.zeros(knob.points)
        self._arrivals = np.zeros(knob.points)
        self._steps = 0

    def sample(self, idx: np.ndarray, rng: np.random.Generator) -> None:
        """New episodes `idx` draw their target (log-uniform in 1 - tau over the range)."""
        lo, hi = self.knob.range
        budget = np.exp(rng.uniform(math.log(1.0 - hi), math.log(1.0 - lo), idx.size))
        self.episode_target[idx] = 1.0 - budget
        grid_log = np.log(1.0 - self.targets)
        self._point[idx] = np.argmin(np.abs(np.log(budget)[:, None] - grid_log[None, :]), axis=1)

    def weights(self) -> np.ndarray:
        """Each episode's SLO weight lambda(tau) (B,), from the table as it is now."""
        return slo_weight_at_target(self.episode_target, self.targets, np.exp(self.log_weight))

    def record(self, violations: np.ndarray, arrivals: np.ndarray) -> bool:
        """Add one step's violating and arriving requests (B,); returns True when the table
        moved (every `every_steps` steps), so the caller re-reads `weights()`."""
        n = self.knob.points
        self._misses += np.bincount(self._point, weights=violations, minlength=n)
        self._arrivals += np.bincount(self._point, weights=arrivals, minlength=n)
        self._steps += 1
        if self._steps < self.knob.every_steps:
            return False
        self.update()
        return True

    def update(self) -> None:
        seen = self._arrivals > 0
        budget = 1.0 - self.targets
        miss = np.where(seen, self._misses / np.maximum(self._arrivals, 1e-12), 0.0)
        step = np.clip(np.log((miss + 0.1 * budget) / budget), -1.0, 1.0)
        self.log_weight = np.where(seen, self.log_weight + self.knob.lr * step, self.log_weight)
        # a stricter target never has a lower price (the grid ascends in tau)
        self.log_weight = np.maximum.accumulate(self.log_weight)
        lo, hi = self.knob.weight_bounds
        self.log_weight = np.clip(self.log_weight, math.log(lo), math.log(hi))
        self._misses[:] = 0.0
        self._arrivals[:] = 0.0
        self._steps = 0

    def table(self) -> dict[str, list[float]]:
        """What a checkpoint stores (`slo_multipliers`): the grid and its weights."""
        return {
            "slo_targets": [float(t) for t in self.targets],
            "slo_weights": [float(w) for w in np.exp(self.log_weight)],
        }

    def load(self, table: Mapping[str, Sequence[float]]) -> None:
        """Restore a saved table (a resumed run); its grid must be this knob's."""
        if not np.allclose(table["slo_targets"], self.targets):
            raise ValueError("slo_multipliers: the saved grid is not this config's slo_target grid")
        self.log_weight = np.log(np.asarray(table["slo_weights"], dtype=np.float64))
