"""Safety clamps: each limiter on a timeline with an explicit clock."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rlscale.safety import ClampState, SafetyLimits, ScalingPolicy, ScalingRules, clamp, clamp_batch


def limits(**kw) -> SafetyLimits:
    return SafetyLimits(**{"min_replicas": 1, "max_replicas": 50, **kw})


def test_bounds_clip_and_say_why():
    lim = limits(min_replicas=2, max_replicas=10)
    st_ = ClampState.empty(1, lim, 15)
    assert clamp(30, 5, 0, lim, st_).replicas == 10
    c = clamp(0, 10, 15, lim, st_)
    assert c.replicas == 2 and "TooFewReplicas" in c.reasons


def test_tolerance_holds_small_changes():
    lim = limits(tolerance=0.1)
    st_ = ClampState.empty(1, lim, 15)
    c = clamp(21, 20, 0, lim, st_)  # 5% change
    assert c.replicas == 20 and c.reasons == ("WithinTolerance",)
    assert clamp(23, 20, 15, lim, st_).replicas == 23


def test_scale_down_stabilisation_uses_the_highest_recent_proposal():
    lim = limits(scale_down=ScalingRules(stabilization_window_s=60))
    st_ = ClampState.empty(1, lim, 15)
    cur = 10
    timeline = [(0, 10), (15, 4), (30, 6), (45, 5), (60, 5), (75, 5), (90, 5)]
    got = []
    for now, prop in timeline:
        c = clamp(prop, cur, now, lim, st_)
        cur = c.replicas
        got.append(cur)
    # the 10 at t=0 holds until it leaves the 60 s window at t=60; then the 6 from t=30 until t=90
    assert got == [10, 10, 10, 10, 6, 6, 5]


def test_scale_up_pods_policy_limits_replicas_added_per_period():
    lim = limits(
        scale_up=ScalingRules(policies=(ScalingPolicy(type="Pods", value=4, period_s=60),))
    )
    st_ = ClampState.empty(1, lim, 15)
    cur = 2
    got = []
    for now in range(0, 150, 15):
        c = clamp(20, cur, now, lim, st_)
        cur = c.replicas
        got.append(cur)
    # +4 at t=0, nothing more until the first change leaves the 60 s period at t=60
    assert got[:5] == [6, 6, 6, 6, 10]
    assert "ScaleUpLimit" in clamp(40, cur, 150, lim, st_).reasons


def test_percent_and_pods_policies_combine_by_select_policy():
    pols = (
        ScalingPolicy(type="Percent", value=10, period_s=60),
        ScalingPolicy(type="Pods", value=4, period_s=60),
    )
    for select, expected in (("Max", 60), ("Min", 96)):
        lim = limits(max_replicas=200, scale_down=ScalingRules(policies=pols, select_policy=select))
        st_ = ClampState.empty(1, lim, 15)
        # from 100: Percent allows 100 -> 90, Pods allows 100 -> 96; Max picks the larger change
        got = clamp(60, 100, 0, lim, st_).replicas
        assert got == (90 if select == "Max" else expected)


def test_disabled_direction_never_changes():
    lim = limits(scale_down=ScalingRules(select_policy="Disabled"))
    st_ = ClampState.empty(1, lim, 15)
    c = clamp(3, 10, 0, lim, st_)
    assert c.replicas == 10 and "ScaleDownLimit" in c.reasons


def test_gpu_budget_counts_warm_replicas():
    lim = limits(gpus_per_replica=4, max_gpus=32)
    st_ = ClampState.empty(1, lim, 15)
    c = clamp(10, 4, 0, lim, st_, warm=2)
    assert c.replicas == 6 and "GPUBudget" in c.reasons


@settings(max_examples=60, deadline=None)
@given(
    props=st.lists(st.integers(-5, 100), min_size=1, max_size=30),
    lo=st.integers(0, 5),
    span=st.integers(0, 30),
)
def test_replicas_never_leave_min_max(props, lo, span):
    lim = SafetyLimits(
        min_replicas=lo,
        max_replicas=lo + span + 1,
        tolerance=0.1,
        scale_up=ScalingRules(
            stabilization_window_s=30,
            policies=(ScalingPolicy(type="Percent", value=50, period_s=60),),
        ),
        scale_down=ScalingRules(
            stabilization_window_s=60, policies=(ScalingPolicy(type="Pods", value=2, period_s=30),)
        ),
    )
    st_ = ClampState.empty(3, lim, 15)
    cur = np.full(3, float(lo))
    for t, p in enumerate(props):
        out, _ = clamp_batch(np.array([p, p * 2, -p], dtype=float), cur, t * 15.0, lim, st_)
        assert ((out >= lim.min_replicas) & (out <= lim.max_replicas)).all()
        cur = out.astype(float)


def test_rate_limit_period_starts_count_changes_in_both_directions():
    # HPA: periodStartReplicas = current - added + deleted, whatever the direction now
    four_per_minute = (ScalingPolicy(type="Pods", value=4, period_s=60),)
    lim = limits(
        scale_up=ScalingRules(policies=four_per_minute),
        scale_down=ScalingRules(policies=four_per_minute),
    )
    st_ = ClampState.empty(1, lim, 15)
    assert clamp(6, 10, 0, lim, st_).replicas == 6
    # the period started at 10 (6 + 4 removed), so +4 from there allows 14
    assert clamp(20, 6, 15, lim, st_).replicas == 14
