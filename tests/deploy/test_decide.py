"""The decision pipeline as timelines with an explicit clock (no I/O)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rlscale.deploy.decide import HOLD, NO_CHANGE, SCALE, DecideOptions, TargetMemory, decide
from rlscale.deploy.kube import ReplicaState
from rlscale.policies.base import Decision
from rlscale.safety import SafetyLimits, ScalingPolicy, ScalingRules
from tests.deploy.fakes import T0, ScriptedPolicy, constant, raising, reading

LIMITS = SafetyLimits(min_replicas=2, max_replicas=10)


def state(
    desired: int = 4,
    ready: int | None = None,
    starting: int = 0,
    *,
    paused: bool = False,
    oldest_starting_s: float | None = None,
) -> ReplicaState:
    ready = desired - starting if ready is None else ready
    return ReplicaState(
        desired,
        ready,
        starting,
        0,
        0,
        "7",
        "uid",
        paused,
        oldest_starting_s if oldest_starting_s is not None else (30.0 if starting else None),
    )


def memory(limits: SafetyLimits = LIMITS) -> TargetMemory:
    return TargetMemory(limits, 15.0, window_len=4)


DEFAULT_OPTIONS = DecideOptions()


def run(
    policy,
    *,
    fallback=None,
    mem=None,
    now=T0,
    replicas=None,
    rd=None,
    options=DEFAULT_OPTIONS,
    **kw,
):
    return decide(
        target="llm/llama",
        now_s=now,
        replicas=state() if replicas is None else replicas,
        reading=rd if rd is not None else reading(now),
        policy=policy,
        fallback=fallback,
        memory=mem if mem is not None else memory(),
        options=options,
        **kw,
    )


def reasons(record) -> list[str]:
    return [s.reason for s in record.steps]


def test_scales_up_when_the_policy_proposes_more() -> None:
    r = run(constant(6))
    assert (r.outcome, r.reason, r.current, r.proposed, r.desired) == (
        SCALE,
        "PolicyProposal",
        4,
        6,
        6,
    )
    assert reasons(r) == ["ReplicaState", "MetricsTrusted", "PolicyProposal", "Scale"]


def test_keeps_the_count_when_the_policy_agrees() -> None:
    r = run(constant(4))
    assert (r.outcome, r.desired) == (NO_CHANGE, 4)


def test_holds_replicas_when_metrics_are_stale() -> None:
    policy = constant(1)
    r = run(policy, fallback=constant(1), rd=reading(stale=True))
    assert (r.outcome, r.reason, r.desired) == (HOLD, "MetricsStale", 4)
    assert policy.calls == []  # no decision on stale data, not even a shadow one


def test_holds_when_prometheus_is_unreachable() -> None:
    r = run(
        constant(1),
        fallback=constant(1),
        rd=reading(error="Prometheus at http://p:9090 unreachable"),
    )
    assert (r.outcome, r.reason, r.desired) == (HOLD, "MetricsUnavailable", 4)
    assert "unreachable" in r.explain()


def test_holds_when_the_replica_state_cannot_be_read() -> None:
    r = decide(
        target="llm/llama",
        now_s=T0,
        replicas=None,
        reading=reading(),
        policy=constant(9),
        fallback=None,
        memory=memory(),
        replicas_error="500 injected fault",
    )
    assert (r.outcome, r.reason, r.current, r.desired) == (
        HOLD,
        "ReplicaStateUnavailable",
        None,
        None,
    )
    assert "500 injected fault" in r.explain()


def test_falls_back_to_the_rule_policy_when_a_required_field_is_missing() -> None:
    primary, fallback = constant(9, "ppo"), constant(6, "hpa")
    r = run(primary, fallback=fallback, rd=reading(missing=["gpu_utilization_pct"]))
    assert (r.outcome, r.source, r.fallback_cause, r.policy, r.desired) == (
        SCALE,
        "fallback",
        "MetricsMissing",
        "hpa",
        6,
    )
    assert primary.calls == []
    assert "MetricsMissing" in reasons(r) and "FallbackProposal" in reasons(r)


def test_never_scales_down_on_partial_data() -> None:
    r = run(constant(9), fallback=constant(2, "hpa"), rd=reading(missing=["ttft_p95_s"]))
    assert (r.outcome, r.desired) == (NO_CHANGE, 4)
    assert "NoScaleDownOnMissingData" in reasons(r)


def test_holds_when_even_the_fallbacks_fields_are_missing() -> None:
    fallback = constant(9, "hpa")
    r = run(constant(9), fallback=fallback, rd=reading(missing=["requests_waiting"]))
    assert (r.outcome, r.reason, r.desired) == (HOLD, "MetricsMissing", 4)
    assert fallback.calls == []


def test_holds_on_missing_data_without_a_fallback() -> None:
    r = run(constant(9), fallback=None, rd=reading(missing=["kv_cache_usage"]))
    assert (r.outcome, r.reason) == (HOLD, "MetricsMissing")


def test_falls_back_when_the_policy_raises() -> None:
    r = run(raising(), fallback=constant(5, "hpa"))
    assert (r.outcome, r.source, r.fallback_cause, r.desired) == (
        SCALE,
        "fallback",
        "PolicyError",
        5,
    )
    assert "policy exploded" in r.explain()


def test_a_fallback_after_a_policy_error_on_complete_data_may_scale_down() -> None:
    r = run(raising(), fallback=constant(3, "hpa"))
    assert (r.outcome, r.desired) == (SCALE, 3)


def test_holds_when_both_policies_raise() -> None:
    r = run(raising(), fallback=raising("hpa"))
    assert (r.outcome, r.reason, r.desired) == (HOLD, "PolicyError", 4)


def test_treats_a_nonsense_proposal_as_a_policy_error() -> None:
    for bad in (Decision(-1, "negative"), Decision(math.nan, "nan"), "six"):  # type: ignore[arg-type]
        r = run(ScriptedPolicy(lambda w, bad=bad: bad), fallback=None)
        assert (r.outcome, r.reason) == (HOLD, "PolicyError"), bad


def test_does_not_pile_scale_ups_on_starting_replicas() -> None:
    # Issue 12 item 12: the guard compares the proposal with ready + starting (here 3 + 4 = 7,
    # a surge pod of a rollout among them), not with "any pod starting". Before, a proposal of
    # 8 on 4 ready + 2 starting was held too (the assertion this test had); see the next test.
    r = run(constant(7), replicas=state(6, ready=3, starting=4))
    assert (r.outcome, r.reason, r.desired) == (NO_CHANGE, "WaitingForStartingReplicas", 6)
    assert "WaitingForStartingReplicas" in reasons(r)


def test_scales_up_past_what_the_starting_replicas_cover() -> None:
    r = run(constant(8), replicas=state(6, ready=4, starting=2))
    assert (r.outcome, r.desired) == (SCALE, 8)
    assert "WaitingForStartingReplicas" not in reasons(r)


def test_scale_down_is_not_held_back_by_starting_replicas() -> None:
    r = run(constant(3), replicas=state(6, ready=4, starting=2))
    assert (r.outcome, r.desired) == (SCALE, 3)


def test_scales_up_past_replicas_stuck_starting() -> None:
    r = run(constant(8), replicas=state(6, ready=4, starting=2, oldest_starting_s=1800.0))
    assert (r.outcome, r.desired) == (SCALE, 8)
    assert "StartingReplicasStuck" in reasons(r)


def test_clamps_apply_with_their_reasons() -> None:
    limits = SafetyLimits(
        min_replicas=2,
        max_replicas=10,
        scale_up=ScalingRules(policies=(ScalingPolicy(type="Pods", value=2, period_s=60),)),
    )
    mem = memory(limits)
    r = run(constant(50), mem=mem)
    assert (r.desired, r.clamps) == (6, ("ScaleUpLimit",))
    # 30 s later the period still holds the +2: no further room.
    r2 = run(constant(50), mem=mem, now=T0 + 30, replicas=state(6))
    assert (r2.outcome, r2.desired, r2.clamps) == (NO_CHANGE, 6, ("ScaleUpLimit",))
    r3 = run(constant(0), mem=memory(limits))
    assert (r3.desired, r3.clamps) == (2, ("TooFewReplicas",))


def test_respects_a_manual_scale_change() -> None:
    mem = memory()
    opts = DecideOptions(manual_override_hold_s=600)
    run(constant(4), mem=mem, options=opts)  # sees 4
    r = run(constant(4), mem=mem, now=T0 + 15, replicas=state(8), options=opts)  # someone set 8
    assert (r.outcome, r.reason, r.current, r.desired) == (HOLD, "ManualOverride", 8, 4)
    assert "ExternalChange" in reasons(r)
    r = run(constant(4), mem=mem, now=T0 + 600, replicas=state(8), options=opts)
    assert r.reason == "ManualOverride"
    r = run(constant(4), mem=mem, now=T0 + 616, replicas=state(8), options=opts)
    assert (r.outcome, r.desired) == (SCALE, 4)  # the hold is over; control resumes from 8


def test_own_writes_are_not_taken_for_manual_changes() -> None:
    mem = memory()
    r = run(constant(6), mem=mem)
    assert r.outcome == SCALE
    mem.last_written = 6  # the controller wrote it
    r = run(constant(6), mem=mem, now=T0 + 15, replicas=state(6))
    assert (r.outcome, r.reason) == (NO_CHANGE, "PolicyProposal")
    assert "ExternalChange" not in reasons(r)


def test_a_shadow_does_not_hold_for_the_autoscaler_it_shadows() -> None:
    mem = memory()
    opts = DecideOptions(dry_run=True)
    run(constant(4), mem=mem, options=opts)
    r = run(constant(5), mem=mem, now=T0 + 15, replicas=state(7), options=opts)
    assert "ExternalChange" in reasons(r)
    assert (r.outcome, r.desired) == (SCALE, 5)


def test_a_deployment_scaled_to_zero_by_hand_is_left_alone() -> None:
    r = run(constant(4), replicas=state(0, ready=0))
    assert (r.outcome, r.reason, r.desired) == (HOLD, "ScaledToZero", 0)
    r = run(
        constant(1),
        replicas=state(0, ready=0),
        mem=memory(SafetyLimits(min_replicas=0, max_replicas=4)),
    )
    assert (r.outcome, r.desired) == (SCALE, 1)  # with scale-to-zero allowed, zero is just a count


def test_kill_switch_holds_but_still_computes() -> None:
    r = run(constant(7), replicas=state(4, paused=True))
    assert (r.outcome, r.reason, r.current, r.desired) == (HOLD, "Paused", 4, 7)


def test_a_gap_in_metrics_restarts_the_window() -> None:
    policy = constant(4)
    mem = memory()
    for i in range(3):
        run(policy, mem=mem, now=T0 + 15 * i)
    assert len(policy.calls[-1]) == 3
    run(policy, mem=mem, now=T0 + 45, rd=reading(T0 + 45, stale=True))
    run(policy, mem=mem, now=T0 + 60, rd=reading(T0 + 60))
    assert len(policy.calls[-1]) == 1
    assert policy.calls[-1][-1].time_s == T0 + 60


def test_the_window_carries_replica_counts_from_the_api() -> None:
    policy = constant(4)
    run(policy, replicas=state(5, ready=3, starting=2))
    m = policy.calls[-1][-1]
    assert (m.replicas_desired, m.replicas_ready, m.replicas_starting, m.replicas_warm) == (
        5,
        3,
        2,
        0,
    )


def test_records_the_policy_latency() -> None:
    ticks = iter([1.0, 1.002])
    r = run(constant(4), perf_counter=lambda: next(ticks))
    assert abs(r.policy_latency_s - 0.002) < 1e-9


def test_a_held_decision_leaves_no_change_in_the_rate_limit_history() -> None:
    limits = SafetyLimits(
        min_replicas=1,
        max_replicas=20,
        scale_up=ScalingRules(policies=(ScalingPolicy(type="Pods", value=2, period_s=300),)),
    )
    mem = memory(limits)
    r = run(constant(9), mem=mem, replicas=state(4, paused=True))
    assert (r.reason, r.desired) == ("Paused", 6)
    r = run(constant(9), mem=mem, now=T0 + 15, replicas=state(4))
    assert r.desired == 6  # the paused would-be change did not use up the +2


_kinds = st.sampled_from(
    ["ok", "ok", "ok", "stale", "error", "missing_primary", "missing_all", "raises"]
)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(_kinds, st.integers(0, 40), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=25,
    ),
    start=st.integers(2, 10),
)
def test_replicas_never_leave_the_bounds_and_missing_data_never_scales_down(steps, start) -> None:
    limits = SafetyLimits(min_replicas=2, max_replicas=10)
    mem = memory(limits)
    current = start
    for i, (kind, proposal, starting, fallback_down) in enumerate(steps):
        now = T0 + 15 * i
        rd = {
            "stale": reading(now, stale=True),
            "error": reading(now, error="down"),
            "missing_primary": reading(now, missing=["gpu_utilization_pct"]),
            "missing_all": reading(now, missing=["arrival_rps", "requests_waiting"]),
        }.get(kind, reading(now))
        policy = raising() if kind == "raises" else constant(proposal)
        fallback = constant(max(current - 3, 0) if fallback_down else proposal + 1, "hpa")
        r = run(
            policy,
            fallback=fallback,
            mem=mem,
            now=now,
            rd=rd,
            replicas=state(
                current, ready=max(current - starting, 0), starting=min(starting, current)
            ),
        )
        if r.outcome == SCALE:
            assert limits.min_replicas <= r.desired <= limits.max_replicas
            if kind in ("stale", "error", "missing_primary", "missing_all"):
                assert r.desired >= current, (kind, r.explain())
            current = r.desired
            mem.last_written = current
        else:
            assert r.outcome in (HOLD, NO_CHANGE)
