"""The capacity rule (`capacity`): the run-time shield with no policy behind it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscale.contract import IntervalMetrics
from rlscale.deploy.config import TargetConfig
from rlscale.deploy.policies import build_target_policies
from rlscale.errors import InputError
from rlscale.evaluation.rollout import rollout
from rlscale.policies.base import Decision
from rlscale.policies.registry import make_policy
from rlscale.profiles.model import load_profile
from rlscale.serving.shield import ShieldConfig
from rlscale.traces.synthetic import default_workload

PROFILE = load_profile("llama-3.1-8b-h100")


def row(t_s: float, arrival_rps: float, current: float) -> IntervalMetrics:
    base = dict.fromkeys(IntervalMetrics.__dataclass_fields__, 0.0)
    return IntervalMetrics(
        **{
            **base,
            "time_s": t_s,
            "interval_s": 15.0,
            "arrival_rps": arrival_rps,
            "prompt_tokens_per_s": arrival_rps * PROFILE.typical_prompt_tokens,
            "output_tokens_per_s": arrival_rps * PROFILE.typical_output_tokens,
            "replicas_desired": current,
            "replicas_ready": current,
        }
    )


def test_it_scales_up_to_the_floor_holds_in_its_band_and_gives_back_when_demand_falls() -> None:
    pol = make_policy("capacity", profile=PROFILE)(0)
    # ~23 req/s a replica at the reference mix: 200 req/s at 0.85 needs 11 replicas
    up = pol.decide([row(0, 200.0, 4)])
    assert 10 <= up.replicas <= 11 and "ShieldFloor" in up.reason
    # a 5 % dip is inside the band between the floor (0.85) and the consolidation check (0.75)
    assert pol.decide([row(15, 190.0, up.replicas)]).replicas == up.replicas
    # demand falls by half and stays there past the 60-s lookback: the fleet follows it down
    for k in range(2, 8):
        last = pol.decide([row(15 * k, 100.0, up.replicas)])
    assert last.replicas < up.replicas and last.replicas >= math.ceil(100.0 / 23.7 / 0.75)


def test_missing_arrivals_never_scale_it_down() -> None:
    pol = make_policy("capacity", profile=PROFILE)(0)
    assert pol.decide([row(0, math.nan, 9)]).replicas == 9


class Zero:
    name = "zero"

    def reset(self) -> None:
        pass

    def decide(self, window) -> Decision:
        return Decision(0, "zero")


def test_it_is_a_zero_proposal_behind_the_shield() -> None:
    """The same code: the rule's rollout is a policy proposing 0 under the shipped shield."""
    w = default_workload()
    f = make_policy("capacity", profile=PROFILE)
    rule = rollout(f, PROFILE, w, seeds=(0, 1), limits=f.limits).summaries
    shielded = rollout(
        lambda s: Zero(), PROFILE, w, seeds=(0, 1), limits=f.limits, shield=ShieldConfig()
    ).summaries
    for a, b in zip(rule, shielded, strict=True):
        assert a.cost_usd == b.cost_usd and a.slo_attainment == b.slo_attainment
        assert a.scale_events == b.scale_events
    assert all(s.as_dict()["shield"] is False for s in rule)  # a rule: no second shield


def test_its_options_are_the_shield_s_fields() -> None:
    f = make_policy("capacity#floor_utilisation=0.9,consolidation_utilisation=0.8", profile=PROFILE)
    assert f.info["shield"]["floor_utilisation"] == 0.9
    assert f(0).shield.config.consolidation_utilisation == 0.8  # type: ignore[attr-defined]
    assert f.name == "capacity#floor_utilisation=0.9,consolidation_utilisation=0.8"
    with pytest.raises(InputError, match="unknown option 'floor'"):
        make_policy("capacity#floor=0.9", profile=PROFILE)
    with pytest.raises(InputError, match="must be <= floor_utilisation"):
        make_policy("capacity#consolidation_utilisation=0.95", profile=PROFILE)
    # the checkpoint's scale-up window, so the two can be compared under the same clamps
    up = make_policy("capacity#scale_up_window_s=30", profile=PROFILE)
    assert up.limits.scale_up.stabilization_window_s == 30.0
    assert up(0).shield.config == ShieldConfig()  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="expected scale_up_window_s=S"):
        make_policy("capacity#scale_up_window_s=-1", profile=PROFILE)


def test_it_runs_live_unshielded() -> None:
    target = TargetConfig.model_validate(
        {"namespace": "llm", "deployment": "llama", "policy": "capacity"}
    )
    built = build_target_policies(target)
    assert built.primary.policy.name == "capacity" and target.shield_config() is None
    assert built.limits == make_policy("capacity", profile=PROFILE).limits
    assert built.primary.policy.decide([row(0, 200.0, 4)]).replicas > 4
    assert np.isfinite(built.limits.scale_down.stabilization_window_s)
