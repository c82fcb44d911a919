"""`LLMAutoscaleEnv`: one LLM inference service on a GPU cluster, as a Gymnasium environment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlscale.envs.cluster import Engine
from rlscale.envs.core import AutoscaleCore, EnvConfig
from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.traces.workload import Workload


def default_workloads(profile: ServiceProfile, seed: int = 0) -> list[Workload]:
    """The embedded default: the built-in synthetic trace sized so its peak needs ~12 replicas."""
    from rlscale.traces.synthetic import default_workload
    from rlscale.traces.transforms import scale_to_fleet

    return [scale_to_fleet(default_workload(seed=seed), 12, profile.capacity_rps())]


class LLMAutoscaleEnv(gym.Env):
    """Autoscale the replicas of an LLM inference Deployment serving a request trace.

    Each step is one control interval (`config.interval_s`, default 15 s) of a simulated cluster
    (`rlscale.envs.cluster`): replicas cold-start for a time sampled from the service profile,
    serve with continuous batching up to their KV-cache knee, and cost $/GPU-hour while they hold
    GPUs.

    ## Action space: Box([-1, -1], [1, 1], float32)

    | index | meaning | mapping |
    |---|---|---|
    | 0 | target utilisation of provisioned capacity | u = u_min + (u_max - u_min)(a+1)/2, replicas = ceil(demand_replicas / u) |
    | 1 | warm-pool size | round((a+1)/2 x limits.max_warm_replicas) (ignored when that is 0) |

    demand_replicas = (arrival rate + queue / 60 s) / one replica's capacity at the request mix
    of the window (`rlscale.contract.demand_replicas`: token-aware, so a 12k-token prompt counts
    for ~10 chat requests). A scale-down proposal within `config.hold_band` of the current target
    keeps it (calm). The proposal then passes the same safety clamps the live controller applies
    (min/max, rate limits, stabilisation, GPU budget: `config.limits`).

    ## Observation space: Box(-1, 10, (window x 11 + 3 + 2 [+1],), float32)

    `rlscale.contract.encode_raw` of the last `window` IntervalMetrics, per interval (oldest first):
    demand per provisioned replica and per ready replica (arrival rps / capacity rps at the mix),
    queue and running requests per ready replica / the knee's batch at the mix, KV-cache usage
    (0..1), GPU utilisation (0..1), log1p(TTFT p95 / SLO), log1p(TPOT p95 / SLO), starting and
    warm shares of the fleet, fleet / max_replicas (each clipped to [0, 10]); then the window's
    request mix: log2 of the mean prompt and output tokens over the profile's reference (clipped
    to [-1, 6]) and the prompt share of the tokens; then sin/cos of the time of day; then log(SLO
    weight) when the cost/SLO knob is on.

    ## Reward

    r = -(w_cost x paid_replicas / fleet_ref + w_slo x violating_requests / mean_requests
          + w_switch x [the replica target changed]), where
    fleet_ref is the replicas the workload's p99 interval needs and mean_requests its mean
    arrivals per interval. Range (-inf, 0]; a perfectly sized fleet with no violations earns about
    -w_cost x load / peak per step.

    ## Episodes

    Each reset picks a workload and a random window of `episode_s` (default 6 h) from it; the
    episode is truncated (not terminated) at the window's end. All randomness comes from the
    `seed` given to `reset`.

    `engine="numpy"` (`gymnasium.make(ENV_ID, engine="numpy")`) steps the numpy reference of the
    whole path (contract, clamps, simulator) instead of its numba kernels; same contract
    (`sim_engine` picks the simulator's engine apart).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        profile: ServiceProfile | str = "llama-3.1-8b-h100",
        workloads: Sequence[Workload] | None = None,
        config: EnvConfig | None = None,
        engine: Engine = "numba",
        sim_engine: Engine | None = None,
    ) -> None:
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.workloads = (
            list(workloads) if workloads is not None else default_workloads(self.profile)
        )
        self.config = config or EnvConfig()
        self._core: AutoscaleCore | None = None
        self._core = AutoscaleCore(
            self.profile, self.workloads, 1, self.config, seed=0, engine=engine,
            sim_engine=sim_engine,
        )  # fmt: skip
        self.observation_space = spaces.Box(-1.0, 10.0, (self._core.obs_size,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        core = self._core
        assert core is not None
        core.rng = np.random.default_rng(int(self.np_random.integers(2**63 - 1)))
        core.sim.reset(seed=int(self.np_random.integers(2**63 - 1)))
        core.reset_mask(np.ones(1, dtype=bool))
        return core.observe(-1.0, 10.0)[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        core = self._core
        assert core is not None
        reward, done, cost = core.step(np.asarray(action, dtype=np.float64)[None, :])
        obs = core.observe(-1.0, 10.0)[0]
        info = {"cost_usd": float(cost[0]), "replicas": float(core.current[0])}
        return obs, float(reward[0]), False, bool(done[0]), info
