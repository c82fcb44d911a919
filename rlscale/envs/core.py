"""The batched autoscaling loop both environments share: action -> replicas (contract.ActionSpec)
-> safety clamps and ClusterSim.step (`envs.fleet.ClampedFleet`, the path the evaluator's
rollouts take too) -> reward and observation (contract.encode_raw). The Gymnasium env is this
with B=1; the SB3 VecEnv is this with B=n_envs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rlscale.contract import (
    DEFAULT_TPOT_SLO_S,
    DEFAULT_TTFT_SLO_S,
    N_FIELDS,
    ActionSpec,
    ObservationSpec,
    encode_raw,
    observation_size,
)
from rlscale.envs.cluster import ClusterSim
from rlscale.envs.fleet import ClampedFleet
from rlscale.profiles.model import ServiceProfile
from rlscale.safety import SafetyLimits
from rlscale.serving.model import SimConfig
from rlscale.traces.workload import Workload


class RewardWeights(BaseModel):
    """reward = -(cost * paid_replicas / fleet_ref + slo * violating_requests / mean_requests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cost: float = Field(default=1.0, ge=0)
    slo: float = Field(default=20.0, ge=0)


class EnvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    interval_s: float = Field(default=15.0, gt=0, le=600)
    window: int = Field(default=4, ge=1, le=64)
    episode_s: float = Field(default=6 * 3600.0, gt=0)
    ttft_slo_s: float = Field(default=DEFAULT_TTFT_SLO_S, gt=0)
    tpot_slo_s: float = Field(default=DEFAULT_TPOT_SLO_S, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    reward: RewardWeights = RewardWeights()
    limits: SafetyLimits = SafetyLimits(min_replicas=1, max_replicas=32)
    latency_jitter: float = Field(default=0.0, ge=0, le=1)
    cold_start_jitter: float = Field(default=0.0, ge=0, le=1)
    u_min: float = Field(default=0.3, gt=0, le=1)
    u_max: float = Field(default=0.95, gt=0, le=1)
    # Runtime cost/SLO knob: when set, each episode samples the SLO weight log-uniformly in this
    # range and the observation carries log(slo_weight) so one policy covers the trade-off.
    slo_weight_range: tuple[float, float] | None = None

    def sim_config(self) -> SimConfig:
        return SimConfig(
            interval_s=self.interval_s,
            ttft_slo_s=self.ttft_slo_s,
            tpot_slo_s=self.tpot_slo_s,
            timeout_s=self.timeout_s,
            latency_jitter=self.latency_jitter,
            cold_start_jitter=self.cold_start_jitter,
        )

    def observation_spec(self, profile: ServiceProfile) -> ObservationSpec:
        return ObservationSpec(
            replica_capacity_rps=profile.capacity_rps(),
            max_batch=float(profile.latency.max_batch),
            ttft_slo_s=self.ttft_slo_s,
            tpot_slo_s=self.tpot_slo_s,
            max_replicas=float(self.limits.max_replicas),
            window=self.window,
        )

    def action_spec(self) -> ActionSpec:
        return ActionSpec(
            u_min=self.u_min, u_max=self.u_max, max_warm=self.limits.max_warm_replicas
        )


class AutoscaleCore:
    """B autoscaled clusters: `reset_mask`, `step(actions) -> (obs, reward, truncated)`."""

    def __init__(
        self,
        profile: ServiceProfile,
        workloads: Sequence[Workload],
        batch: int,
        config: EnvConfig,
        seed: int = 0,
    ) -> None:
        self.profile = profile
        self.config = config
        self.batch = batch
        self.obs_spec = config.observation_spec(profile)
        self.act_spec = config.action_spec()
        self.sim = ClusterSim(
            profile, workloads, batch=batch, config=config.sim_config(), seed=seed
        )
        self.rng = np.random.default_rng(seed)
        self.episode_bins = max(1, int(round(config.episode_s / config.interval_s)))
        self.fleet = ClampedFleet(self.sim, config.limits)
        self.window = np.zeros((batch, config.window, N_FIELDS))
        self.slo_weight = np.full(batch, config.reward.slo)
        self._clock_s = 0.0
        self.knob = config.slo_weight_range is not None
        self.obs_size = observation_size(self.obs_spec) + (1 if self.knob else 0)
        # per-workload normalisers: replicas its p99 bin needs, its mean arrivals per interval
        cap = profile.capacity_rps()
        self._fleet_ref = np.array(
            [max(1.0, np.quantile(w.rate_rps, 0.99) / cap) for w in self.sim.workloads]
        )
        self._mean_arrivals = np.array([max(w.arrivals.mean(), 1e-6) for w in self.sim.workloads])
        self.reset_mask(np.ones(batch, dtype=bool))

    def reset_mask(self, mask: np.ndarray) -> None:
        idx = np.nonzero(mask)[0]
        if idx.size == 0:
            return
        n_w = len(self.sim.workloads)
        wid = np.zeros(self.batch, dtype=np.int64)
        wid[idx] = self.rng.integers(0, n_w, idx.size)
        lengths = self.sim._lengths[wid]
        start = np.zeros(self.batch, dtype=np.int64)
        span = np.maximum(lengths - self.episode_bins, 0)
        start[idx] = (self.rng.random(idx.size) * (span[idx] + 1)).astype(np.int64)
        self.sim.reset(
            mask=mask, workload_index=wid, start_bin=start, episode_bins=self.episode_bins
        )
        self.fleet.start(mask)
        self.window[idx] = self.sim.metrics[idx, None, :]
        if self.knob:
            lo, hi = self.config.slo_weight_range  # type: ignore[misc]
            self.slo_weight[idx] = np.exp(self.rng.uniform(np.log(lo), np.log(hi), idx.size))

    @property
    def current(self) -> np.ndarray:
        """The replica targets (B,) the clamps last set."""
        return self.fleet.current

    def observe(self) -> np.ndarray:
        obs = encode_raw(self.window, self.obs_spec)
        if self.knob:
            obs = np.concatenate([obs, np.log(self.slo_weight)[:, None].astype(np.float32)], axis=1)
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (reward (B,), done (B,), cost_usd (B,)) and updates the window; the caller
        observes (and resets finished clusters) afterwards."""
        last = self.window[:, -1, :]
        proposed, warm = self.act_spec.decode(actions, last, self.obs_spec)
        # Clusters in the batch replay different times of day; the clamp only needs a clock that
        # advances one interval per step (its windows are relative).
        self._clock_s += self.config.interval_s
        cost_before = self.sim.totals.cost_usd.copy()
        ok_before = self.sim.totals.slo_ok.copy()
        m = self.fleet.step(
            proposed, self._clock_s, warm if self.config.limits.max_warm_replicas > 0 else None
        )
        self.window[:, :-1] = self.window[:, 1:]
        self.window[:, -1] = m
        wid = self.sim.wid
        violations = self.sim.last_arrivals - (self.sim.totals.slo_ok - ok_before)
        w = self.config.reward
        reward = -(
            w.cost * self.sim.last_paid / self._fleet_ref[wid]
            + self.slo_weight * violations / self._mean_arrivals[wid]
        )
        return reward, self.sim.done.copy(), self.sim.totals.cost_usd - cost_before
