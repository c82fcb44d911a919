"""`target:U`: the action map with a fixed u, sizing demand at the observed request mix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscale.contract import FIELD_INDEX, N_FIELDS, ActionSpec, IntervalMetrics
from rlscale.envs.core import EnvConfig
from rlscale.policies.registry import make_policy
from rlscale.policies.target import MIX_WINDOW, TargetUtilisationPolicy
from rlscale.profiles.model import load_profile
from rlscale.serving.capacity import observation_spec

PROFILE = load_profile("llama-3.1-8b-h100")


def _window(arrival_rps: float, prompt_tokens: float, output_tokens: float, waiting: float = 0.0):
    """A steady window of MIX_WINDOW intervals of requests of these mean sizes."""
    rows = []
    for i in range(MIX_WINDOW):
        row = np.zeros(N_FIELDS)
        row[FIELD_INDEX["time_s"]] = 15.0 * (i + 1)
        row[FIELD_INDEX["interval_s"]] = 15.0
        row[FIELD_INDEX["arrival_rps"]] = arrival_rps
        row[FIELD_INDEX["prompt_tokens_per_s"]] = arrival_rps * prompt_tokens
        row[FIELD_INDEX["output_tokens_per_s"]] = arrival_rps * output_tokens
        row[FIELD_INDEX["requests_waiting"]] = waiting
        row[FIELD_INDEX["replicas_desired"]] = row[FIELD_INDEX["replicas_ready"]] = 4
        rows.append(IntervalMetrics.from_array(row))
    return rows


def _target(u: float) -> TargetUtilisationPolicy:
    policy = make_policy(f"target:{u:g}", profile=PROFILE).build(0)
    assert isinstance(policy, TargetUtilisationPolicy)
    return policy


def test_sizes_the_reference_mix_by_the_profiles_request_rate_as_before():
    # at the reference request, one replica's capacity is `profile.capacity_rps()`: the version-1
    # sizing, ceil(demand / (capacity x u)), is unchanged there
    ref_p, ref_o = PROFILE.typical_prompt_tokens, PROFILE.typical_output_tokens
    for arrival, waiting in ((90.0, 0.0), (90.0, 300.0), (7.5, 12.0)):
        got = _target(0.8).decide(_window(arrival, ref_p, ref_o, waiting)).replicas
        demand = arrival + waiting / 60.0
        assert got == math.ceil(demand / (PROFILE.capacity_rps() * 0.8) - 1e-9)


def test_ten_times_longer_prompts_ask_for_many_times_the_replicas():
    ref_p, ref_o = PROFILE.typical_prompt_tokens, PROFILE.typical_output_tokens
    policy = _target(0.7)
    short = policy.decide(_window(20.0, ref_p, ref_o)).replicas
    long = policy.decide(_window(20.0, 10 * ref_p, ref_o))
    # 20 req/s of 1,155-token prompts is 0.89 replicas (2 at u 0.7); of 11,550-token ones, 10.8
    # (1.85 req/s a replica within the SLO: 16 at u 0.7), where 22.6 req/s a replica still says 2
    assert short == 2
    assert long.replicas == 16
    assert "11550 / 211 tokens" in long.reason


def test_is_the_action_map_with_a_fixed_u():
    env_spec = EnvConfig(window=MIX_WINDOW).observation_spec(PROFILE)
    act = ActionSpec()
    rng = np.random.default_rng(3)
    for _ in range(50):
        u = float(rng.uniform(act.u_min, act.u_max))
        policy = TargetUtilisationPolicy(u, env_spec)
        w = _window(
            float(rng.uniform(0.5, 200)),
            float(rng.uniform(100, 30_000)),
            float(rng.uniform(10, 2_000)),
            float(rng.uniform(0, 400)),
        )
        rows = np.stack([m.to_array() for m in w])
        a0 = (u - act.u_min) / (act.u_max - act.u_min) * 2.0 - 1.0
        want, _ = act.decode(np.array([a0, -1.0]), rows[-1], env_spec, rows)
        assert policy.decide(w).replicas == int(want)


def test_the_env_and_the_rule_build_one_capacity_model():
    cfg = EnvConfig(window=6, ttft_slo_s=10.0, ttft_slo_s_per_1k_tokens=0.5)
    assert cfg.observation_spec(PROFILE) == observation_spec(
        PROFILE,
        max_replicas=cfg.limits.max_replicas,
        window=6,
        ttft_slo_s=10.0,
        tpot_slo_s=cfg.tpot_slo_s,
        ttft_slo_s_per_1k_tokens=0.5,
    )


def test_refuses_a_utilisation_outside_0_to_1():
    spec = observation_spec(PROFILE, max_replicas=20, window=MIX_WINDOW)
    for bad in (0.0, 1.2, -0.5):
        with pytest.raises(ValueError, match="target utilisation"):
            TargetUtilisationPolicy(bad, spec)
