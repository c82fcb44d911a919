"""Issue 12 (controller half): no scale-down the data or the controller's memory cannot back.

Each test here failed on the controller before the fix: a restart or leader change scaled down
at once, a metrics outage was followed by a scale-down on a half-empty rate window, a write whose
answer was lost did not count against the rate limit, frozen or partial series were trusted.
"""

from __future__ import annotations

from rlscale.deploy.decide import HOLD, NO_CHANGE, SCALE, TargetMemory, decide
from rlscale.deploy.kube import ReplicaState
from rlscale.deploy.leader import LeaderElector
from rlscale.deploy.retry import TemporaryError
from rlscale.safety import SafetyLimits, ScalingPolicy, ScalingRules
from tests.deploy.fakes import T0, FakeKube, constant, controller_config, reading

# The HPA's defaults for scale-down: a 300 s window, then at most 1 pod per 60 s here.
DOWN = ScalingRules(
    stabilization_window_s=300, policies=(ScalingPolicy(type="Pods", value=1, period_s=60),)
)
LIMITS = SafetyLimits(min_replicas=1, max_replicas=20, scale_down=DOWN)
NO_WINDOW = SafetyLimits(min_replicas=1, max_replicas=20)


def PodCoverage(**counts: int):  # noqa: N802 - reads as the record it builds
    # Imported here so that each test fails on its own on a controller without the record.
    from rlscale.deploy.metrics import PodCoverage as Record

    return Record(**counts)


def state(desired: int, ready: int | None = None, starting: int = 0) -> ReplicaState:
    ready = desired - starting if ready is None else ready
    return ReplicaState(
        desired, ready, starting, 0, 0, "7", "uid", False, 30.0 if starting else None
    )


def tick(policy, mem, now, replicas, rd=None):
    return decide(
        target="llm/llama",
        now_s=now,
        replicas=replicas,
        reading=rd if rd is not None else reading(now),
        policy=policy,
        fallback=None,
        memory=mem,
    )


def steps(record) -> list[str]:
    return [s.reason for s in record.steps]


# --- restart and leader change -------------------------------------------------------------------


def test_no_scale_down_inside_the_window_after_a_start() -> None:
    mem = TargetMemory(LIMITS, 15.0)
    falling = iter(range(9, 0, -1))
    for i in range(20):  # 0 .. 285 s: falling load, the new process holds
        r = tick(constant(next(falling, 1)), mem, T0 + 15 * i, state(10))
        assert (r.outcome, r.reason, r.desired) == (NO_CHANGE, "NoScaleDownAfterStart", 10), i
    assert "after a controller start" in r.explain() and mem.settle_s == 300
    r = tick(constant(1), mem, T0 + 300, state(10))
    # The window has refilled with real proposals (its max is 8, from 15 s) and the rate limit
    # allows one pod.
    assert (r.outcome, r.desired) == (SCALE, 9)


def test_scale_up_is_not_held_after_a_start() -> None:
    r = tick(constant(14), TargetMemory(LIMITS, 15.0), T0, state(10))
    assert (r.outcome, r.desired) == (SCALE, 14)


def test_without_a_down_window_nor_down_limits_nothing_is_held() -> None:
    r = tick(constant(4), TargetMemory(NO_WINDOW, 15.0), T0, state(10))
    assert (r.outcome, r.desired) == (SCALE, 4)


def _elector(kube: FakeKube, identity: str) -> LeaderElector:
    return LeaderElector(
        kube,
        "llm",
        "rlscale-controller",
        identity,
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=2,
    )


def test_a_new_leader_makes_no_scale_down_inside_the_window(make_harness) -> None:
    """The issue's timeline: 5 -> 4 by the old leader, then the new one 17 s later must not take
    4 -> 3 against 1 pod per 60 s (nor before its own window of fresh data has passed)."""
    limits = SafetyLimits(
        min_replicas=1,
        max_replicas=20,
        scale_down=ScalingRules(policies=(ScalingPolicy(type="Pods", value=1, period_s=60),)),
    )
    kube = FakeKube()
    cfg = controller_config(leader_election={"enabled": True})
    old = make_harness(constant(1), limits=limits, config=cfg, kube=kube, replicas=5)
    old.controller.elector = _elector(kube, "old")
    assert old.controller.elector.step(T0)
    for i in range(5):  # settles 60 s, then 5 -> 4
        old.controller.elector.step(T0 + 15 * i)
        old.tick(T0 + 15 * i)
    assert kube.replicas("llm", "llama") == 4
    new = make_harness(constant(1), limits=limits, config=cfg, kube=kube)
    new.controller.elector = _elector(kube, "new")
    new.controller.elector.step(T0 + 60)  # sees old's record
    assert new.controller.elector.step(T0 + 77)  # old stopped renewing: the new one takes over
    for t in range(77, 137, 5):
        new.controller.elector.step(T0 + t)
        (res,) = new.tick(T0 + t)
        assert kube.replicas("llm", "llama") == 4, (t, res.record.explain())
    assert res.record.reason == "NoScaleDownAfterStart"


def test_regaining_leadership_restarts_the_settling(make_harness) -> None:
    limits = SafetyLimits(
        min_replicas=1,
        max_replicas=20,
        scale_down=ScalingRules(policies=(ScalingPolicy(type="Pods", value=1, period_s=60),)),
    )
    cfg = controller_config(leader_election={"enabled": True})
    clock = {"now": T0}
    h = make_harness(constant(1), limits=limits, config=cfg, replicas=8, clock=lambda: clock["now"])
    el = h.controller.elector
    assert el.step(T0)
    for t in range(0, 61, 15):
        el.step(T0 + t)
        h.tick(T0 + t)
    assert h.kube.replicas("llm", "llama") == 7
    assert h.tick(T0 + 100) == []  # not renewed for 40 s: not the leader
    # Someone else led meanwhile and wrote 6; we win the Lease back later.
    h.kube.scale_by_someone_else("llm", "llama", 6)
    h.kube.leases.clear()
    assert el.step(T0 + 200)
    (res,) = h.tick(T0 + 200)
    assert (res.record.outcome, res.record.reason) == (NO_CHANGE, "NoScaleDownAfterStart")
    assert "leader change" in res.record.explain()
    assert "ExternalChange" not in steps(res.record)  # the other leader's 6 is no manual change
    el.step(T0 + 261)
    (res,) = h.tick(T0 + 261)
    assert res.action == "Scaled" and h.kube.replicas("llm", "llama") == 5


def test_a_held_scale_down_is_a_reason_an_event_and_a_metric(make_harness) -> None:
    h = make_harness(constant(1), limits=LIMITS, replicas=6)
    (res,) = h.tick(T0)
    assert (res.action, res.record.reason) == ("NoChange", "NoScaleDownAfterStart")
    assert [e["reason"] for e in h.kube.events] == ["NoScaleDownAfterStart"]
    reg = h.controller.metrics.registry
    labels = {"namespace": "llm", "deployment": "llama"}
    assert (
        reg.get_sample_value("rlscale_clamps_total", {**labels, "clamp": "NoScaleDownAfterStart"})
        == 1
    )
    assert (
        reg.get_sample_value(
            "rlscale_decisions_total",
            {**labels, "action": "NoChange", "reason": "NoScaleDownAfterStart"},
        )
        == 1
    )


# --- metrics outages, partial and frozen series -------------------------------------------------


def _settled(limits: SafetyLimits = LIMITS) -> TargetMemory:
    mem = TargetMemory(limits, 15.0)
    for i in range(25):  # 0 .. 360 s of steady load at 10
        tick(constant(10), mem, T0 + 15 * i, state(10))
    return mem


def test_a_prometheus_outage_at_peak_is_followed_by_no_scale_down() -> None:
    mem = _settled()
    t = T0 + 375
    for i in range(22):  # a 5.3-minute outage
        r = tick(constant(10), mem, t + 15 * i, state(10), reading(t + 15 * i, error="unreachable"))
        assert r.reason == "MetricsUnavailable"
    t += 330
    # Back: the first rate windows hold a few seconds of samples, arrivals read 31 of 150.
    for i in range(20):
        r = tick(constant(5), mem, t + 15 * i, state(10))
        assert (r.outcome, r.reason, r.desired) == (NO_CHANGE, "NoScaleDownAfterMetricsGap", 10)
    assert "metrics gap (MetricsUnavailable)" in r.explain()


def test_staleness_restarts_the_settling_too() -> None:
    mem = _settled()
    tick(constant(10), mem, T0 + 375, state(10), reading(T0 + 375, stale=True))
    for i in range(20):  # 390 .. 675 s: by the end the stabilisation window holds only 5s
        r = tick(constant(5), mem, T0 + 390 + 15 * i, state(10))
        assert r.desired == 10, i
    assert r.reason == "NoScaleDownAfterMetricsGap"


def test_frozen_series_hold() -> None:
    policy = constant(2)
    rd = reading(T0, coverage=PodCoverage(reporting=4, covered=4, in_window=4, frozen=4))
    r = tick(policy, TargetMemory(NO_WINDOW, 15.0), T0, state(4), rd)
    assert (r.outcome, r.reason, r.desired) == (HOLD, "MetricsFrozen", 4)
    assert "token counter did not move" in r.explain()
    assert policy.calls == []
    assert not rd.trusted


def test_a_ready_pod_not_scraped_yet_is_missing_not_idle() -> None:
    rd = reading(T0, coverage=PodCoverage(reporting=3, covered=3, in_window=3, frozen=0))
    r = tick(constant(2), TargetMemory(NO_WINDOW, 15.0), T0, state(4), rd)
    assert (r.outcome, r.reason, r.desired) == (NO_CHANGE, "NoScaleDownOnPartialWindow", 4)
    assert "3 of 4 ready pods scraped" in r.explain()
    # Scaling up on partial data is fine: what is missing can only add load.
    r = tick(constant(6), TargetMemory(NO_WINDOW, 15.0), T0, state(4), rd)
    assert (r.outcome, r.desired) == (SCALE, 6)


def test_a_pod_whose_rate_window_is_not_covered_holds_scale_down() -> None:
    rd = reading(T0, coverage=PodCoverage(reporting=4, covered=3, in_window=4, frozen=0))
    r = tick(constant(2), TargetMemory(NO_WINDOW, 15.0), T0, state(4), rd)
    assert (r.outcome, r.reason) == (NO_CHANGE, "NoScaleDownOnPartialWindow")


def test_series_of_deleted_pods_cause_no_scale_down() -> None:
    rd = reading(T0, coverage=PodCoverage(reporting=3, covered=3, in_window=4, frozen=0))
    r = tick(constant(2), TargetMemory(NO_WINDOW, 15.0), T0, state(3), rd)
    assert (r.outcome, r.reason) == (NO_CHANGE, "NoScaleDownOnPartialWindow")
    assert "gone inside the rate window" in r.explain()
    full = reading(T0 + 15, coverage=PodCoverage(reporting=3, covered=3, in_window=3, frozen=0))
    r = tick(constant(2), TargetMemory(NO_WINDOW, 15.0), T0 + 15, state(3), full)
    assert (r.outcome, r.desired) == (SCALE, 2)


def test_a_terminating_pod_still_scraped_holds_scale_down() -> None:
    # 3 ready pods, 4 scraped: the fourth is draining (a PodMonitor scrapes it until it exits).
    rd = reading(T0, coverage=PodCoverage(reporting=4, covered=4, in_window=4, frozen=0))
    r = tick(constant(2), TargetMemory(NO_WINDOW, 15.0), T0, state(3), rd)
    assert (r.outcome, r.reason, r.desired) == (NO_CHANGE, "NoScaleDownOnPartialWindow", 3)
    assert "1 pod(s) scraped but not ready" in r.explain()
    r = tick(constant(5), TargetMemory(NO_WINDOW, 15.0), T0, state(3), rd)
    assert (r.outcome, r.desired) == (SCALE, 5)


def test_the_prometheus_source_reads_the_pod_counts(make_harness) -> None:
    h = make_harness(constant(1), limits=NO_WINDOW, replicas=4)
    h.prom.set(
        "llama", __pods_reporting=4.0, __pods_covered=2.0, __pods_in_window=4.0, __pods_frozen=0.0
    )
    (res,) = h.tick(T0)
    assert (res.action, res.record.reason) == ("NoChange", "NoScaleDownOnPartialWindow")
    h.prom.set("llama", __pods_frozen=1.0)
    (res,) = h.tick(T0 + 15)
    assert (res.action, res.record.reason) == ("Hold", "MetricsFrozen")
    labels = {"namespace": "llm", "deployment": "llama"}
    reg = h.controller.metrics.registry
    assert reg.get_sample_value("rlscale_metrics_trusted", labels) == 0
    assert (
        reg.get_sample_value(
            "rlscale_fallbacks_total", {**labels, "mode": "hold", "cause": "MetricsFrozen"}
        )
        == 1
    )
    h.prom.set("llama", __pods_frozen=0.0, __pods_covered=4.0)
    (res,) = h.tick(T0 + 30)
    assert res.action == "Scaled" and h.kube.replicas("llm", "llama") == 1


# --- lost answers --------------------------------------------------------------------------------

UP_2_PER_15 = SafetyLimits(
    min_replicas=1,
    max_replicas=20,
    scale_up=ScalingRules(policies=(ScalingPolicy(type="Pods", value=2, period_s=15),)),
)


def test_a_write_whose_answer_was_lost_counts_against_the_rate_limit(make_harness) -> None:
    h = make_harness(constant(9), limits=UP_2_PER_15, replicas=3)
    h.kube.lose_answers("patch_scale", 1)
    h.kube.fail("patch_scale", *[TemporaryError("504 timeout")] * 3)  # the retries time out too
    (res,) = h.tick(T0)
    assert h.kube.replicas("llm", "llama") == 5  # it landed
    assert res.apply is not None and (res.apply.outcome, res.apply.ok) == ("AlreadyScaled", True)
    assert "landed" in (res.apply.error or "")
    (res,) = h.tick(T0 + 5)
    assert h.kube.replicas("llm", "llama") == 5, res.record.explain()
    assert "ScaleUpLimit" in res.record.clamps
    (res,) = h.tick(T0 + 16)
    assert h.kube.replicas("llm", "llama") == 7


def test_a_write_that_cannot_be_confirmed_counts_too(make_harness) -> None:
    h = make_harness(constant(9), limits=UP_2_PER_15, replicas=3)
    h.kube.lose_answers("patch_scale", 1)
    h.kube.fail("patch_scale", *[TemporaryError("504 timeout")] * 3)
    h.kube.fail("read_scale", *[TemporaryError("503")] * 4)
    (res,) = h.tick(T0)
    assert res.action == "Failed" and res.apply is not None and res.apply.maybe_landed
    (res,) = h.tick(T0 + 5)
    assert h.kube.replicas("llm", "llama") == 5, res.record.explain()


def test_a_write_refused_outright_still_leaves_the_budget(make_harness) -> None:
    h = make_harness(constant(9), limits=UP_2_PER_15, replicas=3)
    h.kube.fail("patch_scale", *[TemporaryError("503")] * 4)
    (res,) = h.tick(T0)
    assert res.action == "Failed" and not res.apply.maybe_landed  # the Scale still shows 3
    (res,) = h.tick(T0 + 5)
    assert res.action == "Scaled" and h.kube.replicas("llm", "llama") == 5
