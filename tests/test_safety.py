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
    legacy=st.booleans(),
    initial=st.booleans(),
)
def test_replicas_never_leave_min_max(props, lo, span, legacy, initial):
    lim = SafetyLimits(
        min_replicas=lo,
        max_replicas=lo + span + 1,
        tolerance=0.1,
        legacy_behavior=legacy,
        scale_up=ScalingRules(
            stabilization_window_s=30,
            policies=(ScalingPolicy(type="Percent", value=50, period_s=60),),
        ),
        scale_down=ScalingRules(
            stabilization_window_s=60, policies=(ScalingPolicy(type="Pods", value=2, period_s=30),)
        ),
    )
    st_ = ClampState.empty(3, lim, 15, initial_recommendation=initial)
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


def run(lim, proposals, current, *, initial=False, period_s=15.0):
    st_ = ClampState.empty(1, lim, period_s, initial_recommendation=initial)
    out = []
    for i, p in enumerate(proposals):
        current = clamp(p, current, i * period_s, lim, st_).replicas
        out.append(current)
    return out


def test_initial_recommendation_holds_the_first_scale_down_for_the_window():
    # upstream recordInitialRecommendation: the count at the first sync (10) is a recommendation
    # at t=0, so the 60 s down window keeps 10 until t=60
    lim = limits(scale_down=ScalingRules(stabilization_window_s=60))
    assert run(lim, [4] * 6, 10, initial=True) == [10, 10, 10, 10, 4, 4]
    # without it (the default) a fresh clamp scales down at once
    assert run(lim, [4] * 6, 10) == [4] * 6


def test_initial_recommendation_and_a_zero_up_window_scale_up_at_once():
    # the initial count is recorded just before the first proposal: a 0 s up window never holds it
    lim = limits()
    assert run(lim, [8, 8], 4, initial=True) == [8, 8]
    # a 30 s up window holds it (min of the window) until it leaves at t=30
    lim = limits(scale_up=ScalingRules(stabilization_window_s=30))
    assert run(lim, [8, 8, 8], 4, initial=True) == [4, 4, 8]


def test_reset_rearms_the_initial_recommendation_of_the_reset_clusters_only():
    lim = limits(scale_down=ScalingRules(stabilization_window_s=60))
    st_ = ClampState.empty(2, lim, 15, initial_recommendation=True)
    cur = np.array([10.0, 10.0])
    for t in range(0, 90, 15):
        cur = clamp_batch(np.array([4.0, 4.0]), cur, float(t), lim, st_)[0].astype(float)
    assert cur.tolist() == [4, 4]
    st_.reset(np.array([True, False]))
    # cluster 0 restarts at 10 (as a new episode would) and waits its window again; cluster 1 goes on
    cur = np.array([10.0, 4.0])
    got = []
    for t in range(90, 165, 15):
        cur = clamp_batch(np.array([4.0, 4.0]), cur, float(t), lim, st_)[0].astype(float)
        got.append(cur.tolist())
    assert got == [[10, 4], [10, 4], [10, 4], [10, 4], [4, 4]]


def test_legacy_behavior_caps_each_sync_at_twice_the_count_or_four():
    # normalizeDesiredReplicas without `behavior`: max(2 x current, 4) per sync, no period memory
    lim = limits(
        max_replicas=100, legacy_behavior=True, scale_down=ScalingRules(stabilization_window_s=300)
    )
    assert run(lim, [50] * 5, 1) == [4, 8, 16, 32, 50]
    c = clamp(50, 3, 0, lim, ClampState.empty(1, lim, 15))
    assert c.replicas == 6 and "ScaleUpLimit" in c.reasons


def test_legacy_behavior_keeps_the_max_over_the_window_including_its_edge():
    # the highest recommendation not older than 300 s (a sample exactly 300 s old still counts,
    # Before(cutoff) drops only older ones); no scale-down rate limit
    lim = limits(legacy_behavior=True, scale_down=ScalingRules(stabilization_window_s=300))
    got = run(lim, [10] + [2] * 21, 10)
    assert got[:21] == [10] * 21 and got[21] == 2  # t = 300 s still holds, t = 315 s drops
    # the max may lie above the current count: upstream then scales up to it
    st_ = ClampState.empty(1, lim, 15)
    clamp(10, 10, 0, lim, st_)
    assert clamp(7, 5, 15, lim, st_).replicas == 10


def _random_limits(rng: np.random.Generator) -> SafetyLimits:
    def rules() -> ScalingRules:
        pols = tuple(
            ScalingPolicy(
                type=str(rng.choice(["Pods", "Percent"])),
                value=float(rng.integers(1, 200)),
                period_s=float(rng.choice([15, 30, 60, 120])),
            )
            for _ in range(rng.integers(0, 3))
        )
        return ScalingRules(
            stabilization_window_s=float(rng.choice([0, 15, 45, 300])),
            policies=pols,
            select_policy=str(rng.choice(["Max", "Min", "Disabled"])),
        )

    lo = int(rng.integers(0, 4))
    return SafetyLimits(
        min_replicas=lo,
        max_replicas=lo + int(rng.integers(1, 30)),
        tolerance=float(rng.choice([0.0, 0.1])),
        scale_up=rules(),
        scale_down=rules(),
        gpus_per_replica=int(rng.integers(1, 3)),
        max_gpus=None if rng.random() < 0.5 else int(rng.integers(2 * max(lo, 1) + 4, 60)),
    )


def test_the_kernel_clamps_exactly_as_the_numpy_reference_over_random_limits_and_histories():
    from rlscale.safety import clamp_batch_reference

    rng = np.random.default_rng(0)
    b = 6
    for _ in range(60):
        limits = _random_limits(rng)
        init = bool(rng.random() < 0.5)
        states = [ClampState.empty(b, limits, 15.0, initial_recommendation=init) for _ in "ab"]
        current = rng.integers(0, 20, b).astype(float)
        for t in range(40):
            proposed = rng.integers(0, 40, b).astype(float)
            warm = rng.integers(0, 4, b).astype(float)
            now = 15.0 * t
            ref = clamp_batch_reference(proposed, current, now, limits, states[0], warm=warm)
            fast = clamp_batch(proposed, current, now, limits, states[1], warm=warm)
            assert np.array_equal(ref[0], fast[0]) and np.array_equal(ref[1], fast[1])
            for name in ("times_s", "proposals", "added", "removed", "initial", "initial_time_s"):
                np.testing.assert_array_equal(getattr(states[0], name), getattr(states[1], name))
            current = ref[0].astype(float)
            if t % 13 == 12:  # a reset cluster: NaN history, re-armed initial recommendation
                mask = rng.random(b) < 0.5
                for s in states:
                    s.reset(mask)
