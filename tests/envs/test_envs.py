"""The Gymnasium env and the SB3 VecEnv over the batched core."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rlscale.envs.core import EnvConfig
from rlscale.envs.gym_env import LLMAutoscaleEnv
from rlscale.envs.vec_env import LLMAutoscaleVecEnv
from rlscale.safety import SafetyLimits, ScalingPolicy, ScalingRules
from rlscale.serving.shield import ShieldConfig
from rlscale.traces.workload import Workload
from tests.conftest import make_profile


def diurnal(days: float = 0.5, peak_rps: float = 150.0) -> Workload:
    t = np.arange(int(days * 86400 / 15)) * 15.0
    rate = peak_rps * (0.2 + 0.8 * np.sin(np.pi * t / 86400) ** 2)
    n = len(t)
    return Workload(
        "diurnal",
        "test",
        15.0,
        rate * 15,
        np.full(n, 1000.0),
        np.full(n, 200.0),
        prompt_tokens_cv=0.8,
    )


CFG = EnvConfig(episode_s=3600.0)


def test_env_passes_gymnasium_and_sb3_checkers():
    env = LLMAutoscaleEnv(make_profile(), [diurnal()], CFG)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_env_is_registered_with_gymnasium():
    env = gym.make(
        "rlscale/LLMAutoscale-v0", profile=make_profile(), workloads=[diurnal()], config=CFG
    )
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_same_seed_gives_the_same_rollout():
    def run(seed: int) -> list[float]:
        env = LLMAutoscaleEnv(make_profile(cold_start_s=(20, 60, 120)), [diurnal()], CFG)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return [env.step(env.action_space.sample())[1] for _ in range(100)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_episode_is_truncated_after_episode_s():
    env = LLMAutoscaleEnv(make_profile(), [diurnal()], CFG)
    env.reset(seed=0)
    for i in range(240):  # noqa: B007 (i is checked after the loop)
        _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        assert not terminated
        if truncated:
            break
    assert i == 239  # 3600 s / 15 s


def test_env_applies_the_safety_clamps_it_is_configured_with():
    limits = SafetyLimits(
        min_replicas=2,
        max_replicas=6,
        scale_up=ScalingRules(policies=(ScalingPolicy(type="Pods", value=1, period_s=60),)),
    )
    env = LLMAutoscaleEnv(
        make_profile(), [diurnal(peak_rps=400)], EnvConfig(episode_s=3600.0, limits=limits)
    )
    env.reset(seed=0)
    seen = []
    for _ in range(40):
        # a[0] = -1: provision for 30% utilisation -> wants far more than 6 replicas
        _, _, _, _, info = env.step(np.array([-1.0, 0.0], dtype=np.float32))
        seen.append(info["replicas"])
    assert max(seen) == 6 and min(seen) >= 2
    assert all(b - a <= 1 for a, b in zip(seen, seen[1:], strict=False))  # +1 pod per 60 s at most


def test_reward_charges_violations_when_underprovisioned():
    def episode_reward(max_replicas: int) -> float:
        cfg = EnvConfig(
            episode_s=3600.0, limits=SafetyLimits(min_replicas=1, max_replicas=max_replicas)
        )
        env = LLMAutoscaleEnv(make_profile(), [diurnal(peak_rps=400)], cfg)
        env.reset(seed=0)
        return sum(env.step(np.array([0.0, 0.0], dtype=np.float32))[1] for _ in range(100))

    # two replicas cost less than the ~15 the load needs, but their violations cost far more
    assert episode_reward(2) < episode_reward(32) - 10.0


def test_vec_env_resets_finished_episodes_with_terminal_observation():
    venv = LLMAutoscaleVecEnv(
        make_profile(), [diurnal()], n_envs=8, config=EnvConfig(episode_s=600.0), seed=1
    )
    obs = venv.reset()
    assert obs.shape == (8, venv.observation_space.shape[0])
    for step in range(40):  # noqa: B007 (step is checked after the loop)
        obs, rew, done, infos = venv.step(np.zeros((8, 2)))
        if done.any():
            break
    assert step == 39  # 600 s / 15 s
    assert done.all()
    assert all("terminal_observation" in i and i["TimeLimit.truncated"] for i in infos)
    assert np.isfinite(rew).all() and np.isfinite(obs).all()


def test_cost_slo_knob_adds_the_weight_to_the_observation():
    cfg = EnvConfig(episode_s=3600.0, slo_weight_range=(1.0, 100.0))
    venv = LLMAutoscaleVecEnv(make_profile(), [diurnal()], n_envs=16, config=cfg, seed=0)
    obs = venv.reset()
    w = obs[:, -1]
    assert w.min() >= 0.0 and w.max() <= np.log(100.0) + 1e-6
    assert np.std(w) > 0.1


@pytest.mark.parametrize("max_warm", [0, 3])
def test_warm_pool_action_is_bounded_by_the_limits(max_warm):
    cfg = EnvConfig(
        episode_s=3600.0,
        limits=SafetyLimits(min_replicas=1, max_replicas=20, max_warm_replicas=max_warm),
    )
    env = LLMAutoscaleEnv(make_profile(cold_start_s=(30, 30, 30)), [diurnal()], cfg)
    env.reset(seed=0)
    for _ in range(20):
        env.step(np.array([0.0, 1.0], dtype=np.float32))
    assert env._core.sim.warm[0] + env._core.sim.warm_loading.total()[0] == max_warm


def test_the_training_env_runs_the_shield_it_is_configured_with():
    # issue 13: the shield is the same code in training as in evaluation and the controller, so
    # a policy learns the sizes it will be served at; a policy that always proposes the fewest
    # replicas (u = u_max = 1.0) is held up by the shield's floor
    def run(shield: ShieldConfig | None) -> tuple[float, dict[str, int]]:
        cfg = EnvConfig(episode_s=3600.0, u_max=1.0, shield=shield)
        env = LLMAutoscaleEnv(make_profile(), [diurnal(peak_rps=400)], cfg)
        env.reset(seed=0)
        seen = [env.step(np.array([1.0, 0.0], dtype=np.float32))[4]["replicas"] for _ in range(120)]
        assert env._core is not None
        return float(np.mean(seen)), env._core.fleet.shield_counts()[0]

    bare, bare_fired = run(None)
    shielded, fired = run(ShieldConfig())
    assert sum(bare_fired.values()) == 0 and sum(fired.values()) > 0
    assert shielded > bare


def test_episodes_start_with_the_traces_past_behind_them_or_with_none():
    # the multi-scale history (issue 13, item 2): an episode cut from the middle of a trace sees
    # the rates before its start; a share of episodes starts with none (a fresh controller)
    from rlscale.contract import FIELD_INDEX, history_features
    from rlscale.envs.core import AutoscaleCore

    lags = (20, 60, 240)
    w = diurnal(days=1.0)
    for missing, expect_past in ((0.0, True), (1.0, False)):
        cfg = EnvConfig(episode_s=3600.0, history_intervals=lags, history_missing_share=missing)
        core = AutoscaleCore(make_profile(), [w], 16, cfg, seed=2)
        h = core.arrival_history.shape[1]
        assert h == 244
        checked = 0
        for b in range(16):
            s0 = int(core.sim.t[b])  # the bin episode b starts at
            past = core.arrival_history[b, :-1]
            if expect_past and s0 >= h - 1:
                assert np.allclose(past, w.rate_rps[s0 - (h - 1) : s0])
                checked += 1
            elif not expect_past:
                assert np.isnan(past).all()
        assert checked > 8 or not expect_past
        obs = core.observe()
        hist = obs[:, -len(lags) :]
        assert np.allclose(hist, history_features(core.arrival_history, core.obs_spec))
        if expect_past:  # half a day of a diurnal curve: some episode sees a trend
            assert np.abs(hist).max() > 0.05
        else:
            assert (hist == 0).all()
        # the history advances with the episode: the interval that just ended is appended
        core.step(np.zeros((16, 2)))
        arr = FIELD_INDEX["arrival_rps"]
        assert np.array_equal(core.arrival_history[:, -1], core.window[:, -1, arr])
