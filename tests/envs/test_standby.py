"""Standby tiers (`profiles.standby`): the stage skips change the sampled fill and wake as the
module says, and the simulators wake and fill pool members with them."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.envs.cluster import ClusterSim
from rlscale.envs.requests import RequestSim
from rlscale.errors import InputError
from rlscale.profiles.model import load_profile
from rlscale.profiles.standby import TIERS, standby
from rlscale.serving.model import SimConfig
from tests.conftest import constant_workload

N = 40_000


@pytest.fixture(scope="module", params=["llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100"])
def prof(request):
    return load_profile(request.param)


def _stage(prof, key):
    return next(s for s in prof.cold_start if key in s.name)


def test_sleeping_is_the_profiles_own_cold_start_and_wake(prof):
    s = standby(prof, "sleeping")
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(s.sample_fill_s(a, 500), prof.sample_cold_start_s(b, 500))
    assert np.array_equal(s.sample_wake_s(a, 500), prof.sample_wake_s(b, 500))


def test_a_warm_node_wake_skips_the_node_stage_and_pulls_as_a_new_node(prof):
    s = standby(prof, "warm_node")
    node, pull = _stage(prof, "node"), _stage(prof, "image_pull")
    wake = s.sample_wake_s(np.random.default_rng(0), N)
    fill = s.sample_fill_s(np.random.default_rng(1), N)
    # no node stage in the wake; the pull with P(uncached | new node) = 0.1 / 0.2
    p_pull = pull.probability / node.probability
    expected = (
        prof.mean_cold_start_s - node.mean_s - pull.mean_s + p_pull / pull.probability * pull.mean_s
    )
    assert wake.mean() == pytest.approx(expected, rel=0.02)
    # the fill is a new node, always, and nothing else
    assert fill.min() >= node.low_s and fill.max() <= node.high_s
    assert fill.mean() == pytest.approx((node.low_s + node.mode_s + node.high_s) / 3, rel=0.01)


def test_a_preloaded_node_wake_skips_node_and_pull_and_cuts_the_weight_tail(prof):
    s = standby(prof, "preloaded_node")
    node, pull, w = (_stage(prof, k) for k in ("node", "image_pull", "weight"))
    wake = s.sample_wake_s(np.random.default_rng(0), N)
    cold = prof.sample_cold_start_s(np.random.default_rng(0), N)
    local_weights = (w.low_s + 2 * w.mode_s) / 3
    expected = prof.mean_cold_start_s - node.mean_s - pull.mean_s - w.mean_s + local_weights
    assert wake.mean() == pytest.approx(expected, rel=0.02)
    assert wake.max() <= s.max_wake_s < cold.max()
    # never slower than the fastest cold start could be without a node or a pull
    base_high = sum(x.high_s for x in prof.cold_start if x not in (node, pull))
    assert s.max_wake_s == pytest.approx(base_high - w.high_s + w.mode_s)
    fill = s.sample_fill_s(np.random.default_rng(1), N)
    assert fill.min() >= node.low_s + pull.low_s + w.low_s


def test_a_bad_tier_is_one_line_naming_the_choices(prof):
    with pytest.raises(InputError, match="sleeping, warm_node, preloaded_node"):
        standby(prof, "hot")


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize("tier", TIERS)
def test_the_fluid_sim_wakes_a_pool_member_in_the_tiers_time(tier, engine):
    prof = load_profile("llama-3.1-8b-h100")
    cfg = SimConfig(standby_tier=tier)
    sim = ClusterSim(
        prof, [constant_workload(1.0, bins=4000)], batch=64, seed=5, config=cfg, engine=engine
    )
    sim.reset(initial_replicas=2)
    s = sim.standby
    # fill the pool (2 each), wait out the fill, then scale up by 2: both come from the pool
    for _ in range(int(s.profile.mean_cold_start_s * 6 / cfg.interval_s)):
        sim.step(np.full(64, 2.0), np.full(64, 2.0))
    assert np.all(sim.warm == 2)
    cold_before = sim.totals.cold_starts.copy()
    steps = 0
    while sim.ready.min() < 4:
        sim.step(np.full(64, 4.0), np.zeros(64))
        steps += 1
    assert np.array_equal(sim.totals.cold_starts, cold_before)  # woken, not cold-started
    # the slowest of 64 x 2 wakes bounds the time to all ready
    assert steps * cfg.interval_s <= s.max_wake_s + 2 * cfg.interval_s
    assert steps * cfg.interval_s >= min(s.mean_wake_s * 0.3, s.max_wake_s) - cfg.interval_s


def test_the_request_sim_draws_wakes_from_the_tier():
    prof = load_profile("llama-3.1-8b-h100")
    out = {}
    for tier in ("sleeping", "preloaded_node"):
        sim = RequestSim(
            prof,
            [constant_workload(0.5, bins=400)],
            batch=1,
            seed=2,
            config=SimConfig(standby_tier=tier),
        )
        for _ in range(120):
            sim.step(np.array([1.0]), np.array([2.0]))
        assert sim.clusters[0].warm == 2
        t = 0
        while sim.ready[0] < 3 and t < 100:
            sim.step(np.array([3.0]), np.array([0.0]))
            t += 1
        out[tier] = t
    # a sleeping replica wakes in seconds; a preloaded node still starts the engine (~60 s)
    assert out["sleeping"] <= 2 < out["preloaded_node"]


def test_an_env_config_without_a_tier_simulates_sleeping_replicas_as_before():
    """Configs written before `EnvConfig.standby_tier` (every shipped one) get the simulator's
    default tier, so their training and evaluation are unchanged."""
    from rlscale.envs.core import EnvConfig

    assert EnvConfig().sim_config() == SimConfig(standby_tier="sleeping")
    assert EnvConfig().sim_config().standby_tier == SimConfig().standby_tier


def test_the_env_configs_tier_reaches_the_training_simulator():
    from rlscale.envs.core import AutoscaleCore, EnvConfig
    from rlscale.safety import SafetyLimits

    cfg = EnvConfig(
        limits=SafetyLimits(max_replicas=8, max_warm_replicas=2), standby_tier="warm_node"
    )
    core = AutoscaleCore(load_profile("llama-3.1-8b-h100"), [constant_workload(5.0, 40)], 1, cfg)
    assert core.sim.standby.tier == "warm_node"


def test_a_bad_tier_in_an_env_config_is_one_line_naming_the_field():
    from rlscale.config import validate_model
    from rlscale.envs.core import EnvConfig

    with pytest.raises(InputError) as e:
        validate_model({"standby_tier": "asleep"}, EnvConfig, "warm.yaml")
    line = str(e.value)
    assert "\n" not in line and "warm.yaml" in line and "'standby_tier'" in line
    assert "'sleeping', 'warm_node' or 'preloaded_node'" in line and "asleep" in line
