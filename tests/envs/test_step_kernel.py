"""The env's hot-path kernels (`envs.step_kernel`) held to the numpy contract: the Gymnasium env
stepped through the kernels and through the contract's numpy functions (`engine="numpy"`, same
numba simulator underneath) on the same seeds, workloads and actions for thousands of steps must
give identical observations, rewards, truncations and infos; the encoder and the action map on
random windows (NaN, infinities, every window length the kernels sum differently) likewise."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rlscale.envs  # noqa: F401  (registers the env id)
from rlscale.contract import N_FIELDS, ActionSpec, ObservationSpec, encode_raw
from rlscale.envs import step_kernel as sk
from rlscale.envs.core import EnvConfig, RewardWeights
from rlscale.envs.gym_env import default_workloads
from rlscale.envs.registration import ENV_ID
from rlscale.profiles.model import load_profile
from rlscale.safety import SafetyLimits

TRAINING_LIKE = EnvConfig(
    window=12,
    reward=RewardWeights(cost=1.0, slo=10.0, switch=0.1),
    limits=SafetyLimits(min_replicas=2, max_replicas=20, max_warm_replicas=3),
    latency_jitter=0.1,
    cold_start_jitter=0.2,
    u_min=0.6,
    u_max=0.95,
    slo_weight_range=(2.0, 100.0),
    hold_band=0.15,
    episode_s=3600.0,
)


def _workloads(profile_name: str):
    """The default trace, and copies of it with long prompts and short or long outputs, so the
    request mix walks the SLO-share grid (its interpolation, its clamped edges)."""
    base = default_workloads(load_profile(profile_name))
    w = base[0]
    return [
        w,
        w.with_(prompt_tokens=w.prompt_tokens * 12.0, output_tokens=w.output_tokens * 0.3),
        w.with_(prompt_tokens=w.prompt_tokens * 0.4, output_tokens=w.output_tokens * 5.0),
    ]


# with the multi-scale history (the features the kernel does not write, appended after it)
WITH_HISTORY = TRAINING_LIKE.model_copy(
    update={"history_intervals": (20, 60, 240), "history_missing_share": 0.3}
)


@pytest.mark.parametrize(
    ("profile", "config"),
    [
        ("llama-3.1-8b-h100", EnvConfig()),
        ("llama-3.1-70b-fp8-4xh100", TRAINING_LIKE),
        ("llama-3.1-8b-h100", WITH_HISTORY),
    ],
)
def test_kernel_env_steps_exactly_as_the_numpy_contract(profile, config):
    kw = dict(profile=profile, workloads=_workloads(profile), config=config, sim_engine="numba")
    fast = gym.make(ENV_ID, engine="numba", **kw)
    ref = gym.make(ENV_ID, engine="numpy", **kw)
    rng = np.random.default_rng(3)
    obs_f, _ = fast.reset(seed=11)
    obs_r, _ = ref.reset(seed=11)
    assert np.array_equal(obs_f, obs_r)
    assert ref.unwrapped._core.engine == "numpy" and fast.unwrapped._core.engine == "numba"
    episodes, replicas = 0, set()
    for step in range(3000):
        # in-range actions mostly; out-of-range and NaN ones are clipped by the contract
        action = rng.uniform(-1.2, 1.2, 2).astype(np.float32)
        if step % 97 == 0:
            action[step % 2] = np.nan
        out_f = fast.step(action)
        out_r = ref.step(action)
        assert np.array_equal(out_f[0], out_r[0]), step
        assert out_f[0].dtype == out_r[0].dtype == np.float32
        assert out_f[1:] == out_r[1:], step  # reward, terminated, truncated, info
        replicas.add(out_r[4]["replicas"])
        if out_r[3]:
            episodes += 1
            assert np.array_equal(fast.reset()[0], ref.reset()[0])
    # the walk covered episode ends and a fleet that moved
    assert episodes >= 1 and len(replicas) > 3


def _spec(profile_name: str, window: int, share: bool = True) -> ObservationSpec:
    spec = EnvConfig(window=window).observation_spec(load_profile(profile_name))
    if not share:
        return ObservationSpec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "slo_share": ()})
    return spec


def _random_windows(rng: np.random.Generator, batch: int, window: int) -> np.ndarray:
    """Metric windows over the sizes a cluster sees, with a share of NaN and infinite fields."""
    w = rng.uniform(0.0, 1.0, (batch, window, N_FIELDS))
    w[..., 0] = rng.uniform(0, 3e5, (batch, window))
    w[..., 1] = 15.0
    w[..., 2] = rng.exponential(40.0, (batch, window))
    w[..., 3] = w[..., 2] * rng.lognormal(7.0, 1.5, (batch, 1))
    w[..., 4] = w[..., 2] * rng.lognormal(5.3, 1.0, (batch, 1))
    w[..., 5:7] = rng.exponential(100.0, (batch, window, 2))
    w[..., 8] = rng.uniform(0, 100, (batch, window))
    w[..., 9:15] = rng.exponential(1.0, (batch, window, 6))
    w[..., 15:] = rng.integers(0, 30, (batch, window, N_FIELDS - 15))
    w[rng.random(w.shape) < 0.02] = np.nan
    w[rng.random(w.shape) < 0.005] = np.inf
    w[rng.random(w.shape) < 0.002] = -np.inf
    return w


@pytest.mark.parametrize("window", [1, 2, 4, 8, 12, 17, 64])
@pytest.mark.parametrize(
    "spec_of",
    [
        lambda w: _spec("llama-3.1-8b-h100", w),
        lambda w: _spec("llama-3.1-70b-fp8-4xh100", w, share=False),
        lambda w: ObservationSpec(20.0, 256.0, 2.0, 0.1, 32.0, window=w),  # no capacity model
    ],
)
def test_encoder_kernel_matches_encode_raw(window, spec_of):
    spec = spec_of(window)
    rng = np.random.default_rng(window)
    w = _random_windows(rng, 256, window)
    with np.errstate(all="ignore"):  # the NaN and infinite fields, on purpose
        ref = encode_raw(w, spec)
    out = np.empty_like(ref)
    sk.encode_rows(w, sk.spec_params(spec), out, np.zeros(window), -np.inf, np.inf)
    assert np.array_equal(out, ref, equal_nan=True)
    sk.encode_rows(w, sk.spec_params(spec), out, np.zeros(window), -1.0, 10.0)
    assert np.array_equal(out, np.clip(ref, -1.0, 10.0), equal_nan=True)


@pytest.mark.parametrize("window", [1, 4, 12, 17])
@pytest.mark.parametrize("hold_band", [0.0, 0.15])
def test_action_map_kernel_matches_decode(window, hold_band):
    spec = _spec("llama-3.1-8b-h100", window)
    act = ActionSpec(u_min=0.6, u_max=0.95, max_warm=3, hold_band=hold_band)
    rng = np.random.default_rng(window)
    w = _random_windows(rng, 512, window)
    actions = rng.uniform(-1.5, 1.5, (512, 2))
    actions[rng.random(actions.shape) < 0.05] = np.nan
    with np.errstate(all="ignore"):
        replicas, warm = act.decode(actions, w[:, -1, :], spec, w)
    got_r, got_w = np.empty(512), np.empty(512)
    sk.decode_rows(
        actions, w, sk.spec_params(spec), sk.action_params(act), got_r, got_w, np.zeros(window)
    )
    assert np.array_equal(got_r, replicas, equal_nan=True)
    assert np.array_equal(got_w, warm)
    if hold_band:
        assert (got_r == w[:, -1, 15]).any()


def test_kernels_encode_the_contracts_features_in_its_order():
    assert sk.layout_mismatch() is None


def test_metrics_rows_convert_to_the_arrays_astuple_gives():
    from dataclasses import astuple

    from rlscale.contract import IntervalMetrics

    rng = np.random.default_rng(0)
    for _ in range(50):
        row = rng.normal(0, 100, N_FIELDS)
        row[rng.random(N_FIELDS) < 0.2] = np.nan
        m = IntervalMetrics.from_array(row)
        got = m.to_array()
        assert got.dtype == np.float64 and got.shape == (N_FIELDS,)
        assert np.array_equal(got, np.asarray(astuple(m), dtype=np.float64), equal_nan=True)
        assert np.array_equal(got, row, equal_nan=True)
