"""The batched autoscaling loop both environments share: action -> replicas (contract.ActionSpec)
-> safety clamps and ClusterSim.step (`envs.fleet.ClampedFleet`, the path the evaluator's
rollouts take too) -> reward and observation (contract.encode_raw). The Gymnasium env is this
with B=1; the SB3 VecEnv is this with B=n_envs.

`engine="numba"` (the default) runs the action map, the window shift, the reward and the encoder
through `envs.step_kernel` (a call before the clamps and the simulator's kernels, one after, one
to observe); `engine="numpy"` runs the contract's numpy functions, the reference those kernels
are held to (tests/envs/test_step_kernel.py), with the numpy simulator and clamp (`sim_engine`
picks the simulator's apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.contract import (
    DEFAULT_TPOT_SLO_S,
    DEFAULT_TTFT_SLO_S,
    FIELD_INDEX,
    N_FIELDS,
    ActionSpec,
    ObservationSpec,
    base_observation_size,
    capacity_at_mix,
    encode_raw,
    history_features,
    history_rows,
    observation_size,
)
from rlscale.envs import step_kernel as sk
from rlscale.envs.cluster import ClusterSim, Engine
from rlscale.envs.fleet import ClampedFleet
from rlscale.envs.lagrange import SLOMultipliers, SLOTargetKnob
from rlscale.profiles.model import ServiceProfile
from rlscale.profiles.standby import StandbyTier
from rlscale.safety import SafetyLimits
from rlscale.serving.capacity import observation_spec
from rlscale.serving.model import SimConfig
from rlscale.serving.shield import ShieldConfig
from rlscale.traces.workload import Workload


class RewardWeights(BaseModel):
    """reward = -(cost * paid_replicas / fleet_ref + slo * violating_requests / mean_requests
    + switch * [the replica target changed]).

    `switch` prices a scale event in units of one interval of the whole reference fleet's cost
    (0.1: a move costs what a tenth of the fleet costs for 15 s), so churn that buys nothing
    loses reward, and a move that saves capacity for minutes still pays."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cost: float = Field(default=1.0, ge=0)
    slo: float = Field(default=20.0, ge=0)
    switch: float = Field(default=0.0, ge=0)


class EnvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    interval_s: float = Field(default=15.0, gt=0, le=600)
    window: int = Field(default=4, ge=1, le=64)
    # multi-scale history (`contract.history_features`): lags in intervals, e.g. [20, 60, 240] =
    # 5 min, 15 min, 1 h at 15 s. Episodes start with the trace's past behind them, except a
    # `history_missing_share` of them, which start with none (a controller just started, or one
    # whose window a metrics gap cleared: the features read 0 until the history is there)
    history_intervals: tuple[int, ...] = ()
    history_missing_share: float = Field(default=0.25, ge=0, le=1)
    episode_s: float = Field(default=6 * 3600.0, gt=0)
    ttft_slo_s: float = Field(default=DEFAULT_TTFT_SLO_S, gt=0)
    tpot_slo_s: float = Field(default=DEFAULT_TPOT_SLO_S, gt=0)
    # the SLO class's TTFT slope per 1,000 prompt tokens (`rlscale.slo`; 0: flat)
    ttft_slo_s_per_1k_tokens: float = Field(default=0.0, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)
    reward: RewardWeights = RewardWeights()
    limits: SafetyLimits = SafetyLimits(min_replicas=1, max_replicas=32)
    latency_jitter: float = Field(default=0.0, ge=0, le=1)
    cold_start_jitter: float = Field(default=0.0, ge=0, le=1)
    u_min: float = Field(default=0.3, gt=0, le=1)
    u_max: float = Field(default=0.95, gt=0, le=1)
    # hysteresis of the action map (contract.ActionSpec.hold_band): scale-down proposals within
    # this share of the current target keep it
    hold_band: float = Field(default=0.0, ge=0, lt=1)
    # Runtime cost/SLO knob: when set, each episode samples the SLO weight log-uniformly in this
    # range and the observation carries log(slo_weight) so one policy covers the trade-off.
    slo_weight_range: tuple[float, float] | None = None
    # Or the knob as an SLO-attainment target: each episode samples a target in
    # `slo_target.range` and its SLO weight is that target's Lagrange multiplier, learned by dual
    # ascent as training runs (`envs.lagrange`); the observation carries log(weight) as above.
    slo_target: SLOTargetKnob | None = None
    # what a warm-pool member is (`profiles.standby`); matters only with
    # `limits.max_warm_replicas > 0`. A checkpoint records it (its manifest's training config)
    # because the pool it learned to size is this tier's: a warm node wakes in minutes, a
    # sleeping replica in seconds.
    standby_tier: StandbyTier = "sleeping"
    # the run-time shield in the training loop (`serving.shield`, `{}` = its defaults): the
    # evaluator and the controller run every learned policy behind it, so a policy trained
    # without it learns sizes that the shield then overrides
    shield: ShieldConfig | None = None

    @model_validator(mode="after")
    def _one_knob(self) -> EnvConfig:
        if self.slo_weight_range is not None and self.slo_target is not None:
            raise ValueError("set slo_weight_range or slo_target, not both (one knob)")
        return self

    @property
    def knob(self) -> bool:
        """Whether the observation carries the cost/SLO knob (log of the SLO weight)."""
        return self.slo_weight_range is not None or self.slo_target is not None

    def sim_config(self) -> SimConfig:
        return SimConfig(
            interval_s=self.interval_s,
            ttft_slo_s=self.ttft_slo_s,
            tpot_slo_s=self.tpot_slo_s,
            ttft_slo_s_per_1k_tokens=self.ttft_slo_s_per_1k_tokens,
            timeout_s=self.timeout_s,
            latency_jitter=self.latency_jitter,
            cold_start_jitter=self.cold_start_jitter,
            standby_tier=self.standby_tier,
        )

    def observation_spec(self, profile: ServiceProfile) -> ObservationSpec:
        """`serving.capacity.observation_spec` at this config's SLO, window, history and fleet
        bound."""
        spec = observation_spec(
            profile,
            max_replicas=self.limits.max_replicas,
            window=self.window,
            ttft_slo_s=self.ttft_slo_s,
            tpot_slo_s=self.tpot_slo_s,
            ttft_slo_s_per_1k_tokens=self.ttft_slo_s_per_1k_tokens,
        )
        return replace(spec, history_intervals=self.history_intervals)

    def action_spec(self) -> ActionSpec:
        return ActionSpec(
            u_min=self.u_min,
            u_max=self.u_max,
            max_warm=self.limits.max_warm_replicas,
            hold_band=self.hold_band,
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
        engine: Engine = "numba",
        sim_engine: Engine | None = None,
    ) -> None:
        if engine not in ("numba", "numpy"):
            raise ValueError(f"engine = {engine!r}, must be 'numba' or 'numpy'")
        self.profile = profile
        self.config = config
        self.batch = batch
        self.engine = engine
        self.obs_spec = config.observation_spec(profile)
        self.act_spec = config.action_spec()
        self.sim = ClusterSim(
            profile,
            workloads,
            batch=batch,
            config=config.sim_config(),
            seed=seed,
            engine=sim_engine or engine,
        )
        self.rng = np.random.default_rng(seed)
        self.episode_bins = max(1, int(round(config.episode_s / config.interval_s)))
        self.fleet = ClampedFleet(self.sim, config.limits, config.shield, engine=engine)
        self.window = np.zeros((batch, config.window, N_FIELDS))
        # the arrival rates of the last history_rows intervals (oldest first, NaN: no history)
        self.arrival_history = np.full((batch, history_rows(self.obs_spec)), np.nan)
        self.slo_weight = np.full(batch, config.reward.slo)
        self._clock_s = 0.0
        self.knob = config.knob
        self.multipliers = (
            SLOMultipliers(config.slo_target, batch) if config.slo_target is not None else None
        )
        self.obs_size = observation_size(self.obs_spec) + (1 if self.knob else 0)
        # per-workload normalisers: replicas its p99 bin needs (at its own request mix), its
        # mean arrivals per interval
        self._fleet_ref = np.array(
            [
                max(1.0, np.quantile(w.rate_rps, 0.99) / self._capacity(w))
                for w in self.sim.workloads
            ]
        )
        self._mean_arrivals = np.array([max(w.arrivals.mean(), 1e-6) for w in self.sim.workloads])
        # the kernels' packed specs and preallocated buffers
        if engine == "numba":
            sk.check_window(config.window)
            mismatch = sk.layout_mismatch()
            if mismatch is not None:
                raise ValueError(mismatch)
        self._spec_p = sk.spec_params(self.obs_spec)
        self._act_p = sk.action_params(self.act_spec)
        self._scratch = np.zeros(config.window)
        self._proposed = np.zeros(batch)
        self._warm = np.zeros(batch)
        self._before = np.zeros((3, batch))
        self.reset_mask(np.ones(batch, dtype=bool))

    def _capacity(self, w: Workload) -> float:
        n = max(w.arrivals.sum(), 1e-9)
        isl = float((w.arrivals * w.prompt_tokens).sum() / n)
        osl = float((w.arrivals * w.output_tokens).sum() / n)
        return float(capacity_at_mix(self.obs_spec, np.float64(isl), np.float64(osl)))

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
        if self.arrival_history.shape[1]:
            self._start_history(idx, wid[idx], start[idx])
        if self.multipliers is not None:
            self.multipliers.sample(idx, self.rng)
            self.slo_weight[idx] = self.multipliers.weights()[idx]
        elif self.config.slo_weight_range is not None:
            lo, hi = self.config.slo_weight_range
            self.slo_weight[idx] = np.exp(self.rng.uniform(np.log(lo), np.log(hi), idx.size))

    def _start_history(self, idx: np.ndarray, wid: np.ndarray, start: np.ndarray) -> None:
        """The arrival history episodes `idx` start with: their workloads' rates in the bins
        before `start` (NaN before the trace), ending with the pre-start row's rate; none for
        a `history_missing_share` of them."""
        h = self.arrival_history.shape[1]
        missing = self.rng.random(idx.size) < self.config.history_missing_share
        self.arrival_history[idx] = np.nan
        for i, w, s0, gone in zip(idx, wid, start, missing, strict=True):
            if not gone:
                rate = self.sim.workloads[w].rate_rps
                lo = max(0, s0 - (h - 1))
                self.arrival_history[i, h - 1 - (s0 - lo) : h - 1] = rate[lo:s0]
        self.arrival_history[idx, -1] = self.sim.metrics[idx, FIELD_INDEX["arrival_rps"]]

    def _push_history(self) -> None:
        """Append the interval that just ended (the window's last row) to the arrival history."""
        if self.arrival_history.shape[1]:
            self.arrival_history[:, :-1] = self.arrival_history[:, 1:]
            self.arrival_history[:, -1] = self.window[:, -1, FIELD_INDEX["arrival_rps"]]

    def _learn_prices(self, violations: np.ndarray) -> None:
        """The dual step of the SLO-target knob: record this step's misses; reprice the
        episodes when the table moved."""
        if self.multipliers is not None and self.multipliers.record(
            violations, self.sim.last_arrivals
        ):
            self.slo_weight[:] = self.multipliers.weights()

    @property
    def current(self) -> np.ndarray:
        """The replica targets (B,) the clamps last set."""
        return self.fleet.current

    def observe(self, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
        """The observations (B, obs_size) float32 of the current windows, clipped to [lo, hi]
        (the Gymnasium env passes its box; clipping here spares it a numpy call)."""
        if self.engine == "numba":
            obs = np.empty((self.batch, self.obs_size), dtype=np.float32)
            sk.encode_rows(self.window, self._spec_p, obs, self._scratch, lo, hi)
            if self.obs_spec.history_intervals:
                base = base_observation_size(self.obs_spec)
                hist = history_features(self.arrival_history, self.obs_spec)
                obs[:, base : base + hist.shape[1]] = np.clip(hist, lo, hi)
            if self.knob:
                obs[:, -1] = np.log(self.slo_weight)
                if lo > -np.inf or hi < np.inf:
                    obs[:, -1] = np.clip(obs[:, -1], lo, hi)
            return obs
        obs = encode_raw(self.window, self.obs_spec, self.arrival_history)
        if self.knob:
            obs = np.concatenate([obs, np.log(self.slo_weight)[:, None].astype(np.float32)], axis=1)
        if lo > -np.inf or hi < np.inf:
            obs = np.clip(obs, lo, hi)
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (reward (B,), done (B,), cost_usd (B,)) and updates the window; the caller
        observes (and resets finished clusters) afterwards."""
        if self.engine == "numba":
            out = self._step_kernel(actions)
            self._push_history()
            return out
        last = self.window[:, -1, :]
        proposed, warm = self.act_spec.decode(actions, last, self.obs_spec, self.window)
        target_before = self.fleet.current.copy()
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
        self._push_history()
        wid = self.sim.wid
        violations = self.sim.last_arrivals - (self.sim.totals.slo_ok - ok_before)
        w = self.config.reward
        reward = -(
            w.cost * self.sim.last_paid / self._fleet_ref[wid]
            + self.slo_weight * violations / self._mean_arrivals[wid]
        )
        if w.switch > 0:
            reward = reward - w.switch * (self.fleet.current != target_before)
        self._learn_prices(violations)
        return reward, self.sim.done.copy(), self.sim.totals.cost_usd - cost_before

    def _step_kernel(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`step` through `envs.step_kernel`: decode, the clamps and the simulator, then the
        window, reward and cost in one call."""
        act = np.asarray(actions, dtype=np.float64).reshape(self.batch, 2)
        sim, before = self.sim, self._before
        totals = sim.totals
        sk.begin_step(
            act, self.window, self._spec_p, self._act_p, self._proposed, self._warm,
            self._scratch, self.fleet.current, totals.cost_usd, totals.slo_ok, before,
        )  # fmt: skip
        self._clock_s += self.config.interval_s
        m = self.fleet.step(
            self._proposed,
            self._clock_s,
            self._warm if self.config.limits.max_warm_replicas > 0 else None,
        )
        reward, cost = np.empty(self.batch), np.empty(self.batch)
        w = self.config.reward
        sk.finish_step(
            self.window, m, sim.last_arrivals, totals.slo_ok, sim.last_paid, totals.cost_usd,
            self.fleet.current, before, sim.wid, self._fleet_ref, self._mean_arrivals,
            self.slo_weight, w.cost, w.switch, reward, cost,
        )  # fmt: skip
        if self.multipliers is not None:
            self._learn_prices(sim.last_arrivals - (totals.slo_ok - before[2]))
        return reward, sim.done.copy(), cost
