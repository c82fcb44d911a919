"""The threshold rule and the predictive policy on explicit timelines, and the policy registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscale.contract import FIELDS, IntervalMetrics
from rlscale.errors import InputError
from rlscale.policies.base import Decision, Policy
from rlscale.policies.predictive import PredictiveConfig, PredictivePolicy
from rlscale.policies.registry import POLICY_NAMES, make_policy
from rlscale.policies.threshold import ThresholdConfig, ThresholdPolicy
from rlscale.serving.capacity import slo_capacity_rps
from tests.conftest import constant_workload, make_profile


def m(t: float, **kw: float) -> IntervalMetrics:
    base = {f: 0.0 for f in FIELDS}
    base.update(time_s=t, interval_s=15.0, replicas_ready=4.0, replicas_desired=4.0)
    base.update(kw)
    return IntervalMetrics(**base)


def test_threshold_scales_up_on_busy_gpus_then_cools_down():
    pol = ThresholdPolicy()
    assert pol.decide([m(0, gpu_utilization_pct=90)]).replicas == 5
    # inside the 300 s cool-down nothing moves, whatever the metrics say
    d = pol.decide([m(150, gpu_utilization_pct=99, replicas_desired=5, replicas_ready=5)])
    assert d.replicas == 5 and "cooling down" in d.reason
    assert (
        pol.decide([m(300, gpu_utilization_pct=99, replicas_desired=5, replicas_ready=5)]).replicas
        == 6
    )


def test_threshold_scales_up_on_a_deep_queue_and_down_only_when_both_are_low():
    pol = ThresholdPolicy()
    assert pol.decide([m(0, gpu_utilization_pct=50, requests_waiting=4 * 21)]).replicas == 5
    pol.reset()
    assert (
        pol.decide([m(0, gpu_utilization_pct=20, requests_waiting=4 * 6)]).replicas == 4
    )  # queue 6 >= 5
    assert pol.decide([m(15, gpu_utilization_pct=20, requests_waiting=4 * 4)]).replicas == 3


def test_threshold_stays_within_its_bounds():
    pol = ThresholdPolicy(ThresholdConfig(min_replicas=2, max_replicas=5, cooldown_s=0))
    assert pol.decide([m(0, gpu_utilization_pct=99, replicas_desired=5)]).replicas == 5
    assert pol.decide([m(15, gpu_utilization_pct=1, replicas_desired=2)]).replicas == 2
    assert (pol.limits.min_replicas, pol.limits.max_replicas) == (2, 5)


def test_threshold_config_is_checked():
    with pytest.raises(ValueError, match="gpu_down_pct"):
        ThresholdConfig(gpu_down_pct=80, gpu_up_pct=70)


def test_predictive_provisions_for_a_rising_load_one_cold_start_ahead():
    prof = make_profile(cold_start_s=(120.0, 120.0, 120.0))
    cap = slo_capacity_rps(prof)
    pol = PredictivePolicy(prof, PredictiveConfig(target_utilisation=1.0, alpha=1.0, beta=1.0))
    # +1 rps per 15 s: at 100 rps now, 135 s ahead (120 s cold start + one interval) it is 109 rps
    d = None
    for i in range(20):
        d = pol.decide([m(15.0 * i, arrival_rps=81.0 + i)])
    assert d is not None
    assert d.replicas == math.ceil(109.0 / cap)
    assert d.replicas > math.ceil(100.0 / cap) or 109.0 / cap <= math.ceil(100.0 / cap)
    assert "trend" in d.reason


def test_predictive_never_sheds_below_the_current_load_and_absorbs_the_queue():
    prof = make_profile()
    cap = slo_capacity_rps(prof)
    pol = PredictivePolicy(prof, PredictiveConfig(target_utilisation=1.0))
    for i in range(10):
        d = pol.decide([m(15.0 * i, arrival_rps=10.0 * cap)])
    assert d.replicas == 10
    # falling load: the trend forecast falls but the current rate is the floor
    d = pol.decide([m(150.0, arrival_rps=10.0 * cap, requests_waiting=60.0 * 2 * cap)])
    assert d.replicas == 12  # + the queue drained over 60 s = 2 replicas' worth
    assert "queue" in d.reason


def test_predictive_uses_yesterday_when_it_has_seen_a_day():
    prof = make_profile(cold_start_s=(60.0, 60.0, 60.0))
    cap = slo_capacity_rps(prof)
    pol = PredictivePolicy(prof, PredictiveConfig(target_utilisation=1.0))
    day = 86_400.0
    step = 300.0
    # yesterday: a jump to 20 replicas' worth at 12:00; today the same shape
    for t in np.arange(0.0, day + 12 * 3600.0 - 60.0, step):
        rate = 20.0 * cap if (t % day) >= 12 * 3600.0 else 5.0 * cap
        d = pol.decide([m(float(t), arrival_rps=rate, interval_s=step)])
    # just before noon on day 2 the trend sees a flat 5, the season sees the jump coming
    assert d.replicas >= 20 and "season" in d.reason


def toy_args():
    return dict(profile=make_profile(), workload=constant_workload(20.0, bins=40))


@pytest.mark.parametrize(
    "spec", ["hpa", "threshold", "predictive", "static", "static:3", "oracle", "tuned"]
)
def test_every_named_policy_builds_and_decides(spec):
    f = make_policy(spec, **toy_args())
    pol = f(0)
    assert isinstance(pol, Policy)
    d = pol.decide([m(0.0, arrival_rps=20.0, gpu_utilization_pct=50.0)])
    assert isinstance(d, Decision) and d.replicas >= 0 and d.reason
    assert f.limits.max_replicas >= f.limits.min_replicas


def test_an_unknown_policy_lists_the_valid_names():
    with pytest.raises(InputError) as e:
        make_policy("autopilot", **toy_args())
    msg = str(e.value)
    assert "autopilot" in msg and all(n in msg for n in POLICY_NAMES)


def test_bad_policy_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        make_policy(f"hpa:{tmp_path / 'missing.yaml'}", **toy_args())
    with pytest.raises(InputError, match="static:N"):
        make_policy("static:many", **toy_args())
    with pytest.raises(InputError, match="ppo:PATH"):
        make_policy("ppo", **toy_args())
    with pytest.raises(InputError):
        make_policy(f"ppo:{tmp_path / 'no-checkpoint'}", **toy_args())


def test_the_hpa_entry_carries_its_manifest_behaviour_as_limits():
    f = make_policy("hpa", **toy_args())
    assert f.limits.scale_down.stabilization_window_s == 300
    assert f.limits.scale_up.policies[0].type == "Pods"


def test_predictive_does_not_shed_replicas_before_it_has_a_horizon_of_history():
    prof = make_profile(cold_start_s=(120.0, 120.0, 120.0))
    pol = PredictivePolicy(prof)
    d = pol.decide([m(0.0, arrival_rps=1.0, replicas_desired=9, replicas_ready=9)])
    assert d.replicas == 9 and "warming up" in d.reason
    for i in range(1, 12):  # 165 s > 120 s cold start + 15 s
        d = pol.decide([m(15.0 * i, arrival_rps=1.0, replicas_desired=9, replicas_ready=9)])
    assert d.replicas < 9


def test_rule_policies_hold_the_starting_fleet_when_the_first_interval_is_unobserved():
    from rlscale.evaluation.rollout import rollout

    prof = make_profile()
    w = constant_workload(10.0 * slo_capacity_rps(prof), bins=3)
    for spec in ("hpa", "threshold", "tuned"):
        f = make_policy(spec, profile=prof, workload=w)
        tl = rollout(f, prof, w, limits=f.limits, initial_replicas=12, record=True).timeline
        assert tl[0, 0, FIELDS.index("replicas_desired")] == 12, spec
