"""`LLMAutoscaleVecEnv`: n clusters stepped as one batch, for stable-baselines3.

SB3's VecEnv is an interface (we implement it, we do not extend an algorithm). Finished episodes
reset automatically, with the last observation in `infos[i]["terminal_observation"]` and
`TimeLimit.truncated` set, as SB3's DummyVecEnv does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvStepReturn

from rlscale.envs.core import AutoscaleCore, EnvConfig
from rlscale.profiles.model import ServiceProfile
from rlscale.traces.workload import Workload


class LLMAutoscaleVecEnv(VecEnv):
    def __init__(
        self,
        profile: ServiceProfile,
        workloads: Sequence[Workload],
        n_envs: int,
        config: EnvConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or EnvConfig()
        self.core = AutoscaleCore(profile, workloads, n_envs, self.config, seed=seed)
        obs_space = spaces.Box(-1.0, 10.0, (self.core.obs_size,), np.float32)
        act_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.render_mode = None
        super().__init__(n_envs, obs_space, act_space)
        self._actions = np.zeros((n_envs, 2))
        self._ep_return = np.zeros(n_envs)
        self._ep_len = np.zeros(n_envs, dtype=np.int64)
        self._ep_cost = np.zeros(n_envs)

    def reset(self) -> np.ndarray:
        self.core.reset_mask(np.ones(self.num_envs, dtype=bool))
        self._ep_return[:] = 0
        self._ep_len[:] = 0
        self._ep_cost[:] = 0
        return self.core.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        reward, done, cost = self.core.step(self._actions)
        self._ep_return += reward
        self._ep_len += 1
        self._ep_cost += cost
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            terminal = self.core.observe()
            sim = self.core.sim
            for i in np.nonzero(done)[0]:
                arrived = sim.totals.arrived[i]
                infos[i] = {
                    "terminal_observation": terminal[i],
                    "TimeLimit.truncated": True,
                    "episode": {
                        "r": float(self._ep_return[i]),
                        "l": int(self._ep_len[i]),
                        "t": 0.0,
                    },
                    "cost_usd": float(self._ep_cost[i]),
                    "slo_attainment": float(sim.totals.slo_ok[i] / arrived) if arrived > 0 else 1.0,
                }
            self.core.reset_mask(done)
            self._ep_return[done] = 0
            self._ep_len[done] = 0
            self._ep_cost[done] = 0
        return self.core.observe(), reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def seed(self, seed: int | None = None) -> list[int | None]:
        if seed is not None:
            self.core.rng = np.random.default_rng(seed)
            self.core.sim.reset(seed=seed)
        return [seed] * self.num_envs

    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
