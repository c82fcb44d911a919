"""The controller's tick over fakes: writes, dry-run, leadership, events, metrics, logs."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

from rlscale.deploy import jsonlog
from rlscale.deploy.leader import LeaderElector
from rlscale.deploy.retry import TemporaryError
from rlscale.safety import SafetyLimits
from tests.deploy.fakes import (
    T0,
    FakeKube,
    FakeProm,
    ScriptedPolicy,
    constant,
    controller_config,
    raising,
)


def sample(h, name: str, **labels: str) -> float | None:
    return h.controller.metrics.registry.get_sample_value(name, labels or None)


T = {"namespace": "llm", "deployment": "llama"}


def test_scales_through_the_scale_subresource_and_says_why(make_harness) -> None:
    h = make_harness(constant(5))
    (res,) = h.tick(T0)
    assert (res.action, res.record.desired) == ("Scaled", 5)
    assert h.kube.replicas("llm", "llama") == 5
    (ev,) = h.kube.events
    assert (
        ev["reason"] == "SuccessfulRescale"
        and "New size: 5 (was 3)" in ev["message"]
        and "scripted" in ev["message"]
    )
    assert sample(h, "rlscale_desired_replicas", **T) == 5
    assert sample(h, "rlscale_current_replicas", **T) == 3
    assert sample(h, "rlscale_decisions_total", **T, action="Scaled", reason="PolicyProposal") == 1
    assert sample(h, "rlscale_scale_writes_total", **T, result="Scaled") == 1
    assert sample(h, "rlscale_policy_latency_seconds_count", policy="scripted") == 1


def test_the_next_tick_does_not_mistake_its_own_write_for_a_manual_one(make_harness) -> None:
    h = make_harness(constant(5))
    h.tick(T0)
    (res,) = h.tick(T0 + 15)
    assert (res.action, res.record.reason) == ("NoChange", "PolicyProposal")


def test_dry_run_sends_no_write_request(make_harness) -> None:
    cfg = controller_config(dry_run=True, events=False)
    h = make_harness(constant(7), config=cfg)
    for i in range(3):
        (res,) = h.tick(T0 + 15 * i)
        assert (res.action, res.record.desired) == ("DryRun", 7)
    assert h.kube.writes() == []
    assert h.kube.replicas("llm", "llama") == 3
    assert sample(h, "rlscale_desired_replicas", **T) == 7
    assert sample(h, "rlscale_dry_run", **T) == 1


def test_dry_run_publishes_would_be_scales_as_events(make_harness) -> None:
    h = make_harness(constant(7), config=controller_config(dry_run=True))
    h.tick(T0)
    assert [e["reason"] for e in h.kube.events] == ["DryRunRescale"]
    assert h.kube.writes("patch_scale") == []


def test_a_shadow_follows_the_autoscaler_it_shadows(make_harness) -> None:
    h = make_harness(constant(4), config=controller_config(dry_run=True, events=False))
    h.tick(T0)
    h.kube.scale_by_someone_else("llm", "llama", 8)  # the HPA in charge scaled up
    (res,) = h.tick(T0 + 15)
    assert (res.action, res.record.current, res.record.desired) == ("DryRun", 8, 4)


def test_respects_a_manual_scale_change(make_harness) -> None:
    h = make_harness(constant(4))
    h.tick(T0)
    h.kube.scale_by_someone_else("llm", "llama", 9)
    (res,) = h.tick(T0 + 15)
    assert (res.action, res.record.reason) == ("Hold", "ManualOverride")
    assert h.kube.replicas("llm", "llama") == 9
    assert "ManualOverride" in [e["reason"] for e in h.kube.events]


def test_the_kill_switch_stops_writes(make_harness) -> None:
    h = make_harness(constant(6))
    h.kube.set_annotation("llm", "llama", "rlscale.io/paused", "true")
    for i in range(3):
        (res,) = h.tick(T0 + 15 * i)
        assert (res.action, res.record.reason, res.record.desired) == ("Hold", "Paused", 6)
    assert h.kube.writes("patch_scale") == []
    assert sample(h, "rlscale_paused", **T) == 1
    h.kube.set_annotation("llm", "llama", "rlscale.io/paused", None)
    (res,) = h.tick(T0 + 45)
    assert res.action == "Scaled" and h.kube.replicas("llm", "llama") == 6


def test_holds_replicas_when_metrics_are_stale(make_harness) -> None:
    h = make_harness(constant(1), constant(1, "hpa"))
    h.prom.newest_sample_age_s = 300
    (res,) = h.tick(T0)
    assert (res.action, res.record.reason) == ("Hold", "MetricsStale")
    assert h.kube.replicas("llm", "llama") == 3
    assert [e["reason"] for e in h.kube.events] == ["HoldingScale"]
    assert h.kube.events[0]["type"] == "Warning"
    assert sample(h, "rlscale_fallbacks_total", **T, mode="hold", cause="MetricsStale") == 1
    h.tick(T0 + 15)
    assert len(h.kube.events) == 1  # one event on entering the condition, not one per tick
    h.prom.newest_sample_age_s = 1
    (res,) = h.tick(T0 + 30)
    assert res.action == "Scaled" and h.kube.events[-1]["reason"] in (
        "SuccessfulRescale",
        "Recovered",
    )
    assert "Recovered" in [e["reason"] for e in h.kube.events]


def test_falls_back_when_the_policy_raises_and_recovers(make_harness) -> None:
    broken = {"on": True}

    def fn(w):
        if broken["on"]:
            raise RuntimeError("bad weights")
        return 4

    h = make_harness(ScriptedPolicy(fn, "ppo"), constant(5, "hpa"))
    (res,) = h.tick(T0)
    assert (res.action, res.record.source, res.record.fallback_cause) == (
        "Scaled",
        "fallback",
        "PolicyError",
    )
    assert (
        sample(h, "rlscale_fallbacks_total", **T, mode="fallback_policy", cause="PolicyError") == 1
    )
    assert "FallbackPolicy" in [e["reason"] for e in h.kube.events]
    broken["on"] = False
    (res,) = h.tick(T0 + 15)
    assert (res.record.source, res.record.desired) == ("primary", 4)


def test_api_errors_hold_and_the_loop_keeps_going(make_harness) -> None:
    h = make_harness(constant(6))
    h.kube.fail("get_deployment", *[TemporaryError("500 injected")] * 4)
    (res,) = h.tick(T0)
    assert (res.action, res.record.reason) == ("Hold", "ReplicaStateUnavailable")
    (res,) = h.tick(T0 + 15)
    assert res.action == "Scaled" and h.kube.replicas("llm", "llama") == 6


def test_a_failed_write_is_reported_and_not_counted_by_the_rate_limit(make_harness) -> None:
    from rlscale.safety import ScalingPolicy, ScalingRules

    limits = SafetyLimits(
        min_replicas=1,
        max_replicas=20,
        scale_up=ScalingRules(policies=(ScalingPolicy(type="Pods", value=2, period_s=300),)),
    )
    h = make_harness(constant(9), limits=limits)
    h.kube.fail("patch_scale", *[TemporaryError("503")] * 4)
    (res,) = h.tick(T0)
    assert (res.action, res.record.desired) == ("Failed", 5)
    assert "FailedRescale" in [e["reason"] for e in h.kube.events]
    (res,) = h.tick(T0 + 15)
    assert (res.action, res.record.desired) == ("Scaled", 5)  # the failed +2 did not use the budget


def test_a_bug_in_one_target_does_not_stop_the_others(make_harness) -> None:
    cfg = controller_config(
        targets=[{"namespace": "llm", "deployment": "a"}, {"namespace": "llm", "deployment": "b"}]
    )
    h = make_harness(constant(5), config=cfg)
    h.controller.targets[0].memory = None  # type: ignore[assignment]  # a crash inside decide
    a, b = h.tick(T0)
    assert (a.action, a.record.reason) == ("Hold", "InternalError")
    assert (
        b.action == "Scaled"
        and h.kube.replicas("llm", "b") == 5
        and h.kube.replicas("llm", "a") == 3
    )


def test_a_non_leader_does_not_act(make_harness) -> None:
    kube = FakeKube()
    other = LeaderElector(
        kube,
        "llm",
        "rlscale-controller",
        "other",
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=2,
    )
    other.step(T0)
    cfg = controller_config(leader_election={"enabled": True})
    h = make_harness(constant(6), config=cfg, kube=kube)
    h.controller.elector.step(T0 + 1)
    assert h.tick(T0 + 1) == []
    assert sample(h, "rlscale_leader") == 0
    assert [r.op for r in kube.requests if r.op not in ("get_lease",)] == [
        "create_lease"
    ]  # other's


def test_leadership_lost_between_decision_and_write_stops_the_write(make_harness) -> None:
    cfg = controller_config(leader_election={"enabled": True})
    clock = {"now": T0}
    h = make_harness(constant(6), config=cfg, clock=lambda: clock["now"])
    assert h.controller.elector.step(T0)
    h.kube.after_write = None

    real_observe = h.controller.kube.observe

    def slow_observe(*a, **kw):
        clock["now"] = T0 + 11  # the tick took long enough to pass the renew deadline
        return real_observe(*a, **kw)

    h.controller.kube.observe = slow_observe  # type: ignore[method-assign]
    (res,) = h.tick(T0)
    assert res.action == "NotLeader" and h.kube.writes("patch_scale") == []


def test_counts_gpu_hours_between_ticks(make_harness) -> None:
    h = make_harness(constant(3), replicas=4)
    h.tick(T0)
    h.tick(T0 + 15)
    assert abs(sample(h, "rlscale_gpu_hours_total", **T) - 4 * 15 / 3600) < 1e-9


def test_missing_fields_are_published(make_harness) -> None:
    prom = FakeProm()
    prom.set("llama", kv_cache_usage=None)
    h = make_harness(constant(3), constant(3, "hpa"), prom=prom)
    (res,) = h.tick(T0)
    assert res.record.source == "fallback"
    assert sample(h, "rlscale_metrics_missing", **T, field="kv_cache_usage") == 1
    assert sample(h, "rlscale_metrics_missing", **T, field="arrival_rps") == 0
    assert sample(h, "rlscale_metrics_trusted", **T) == 0


def test_logs_one_strict_json_line_per_decision(make_harness) -> None:
    stream = io.StringIO()
    handler = jsonlog.setup("info", stream)
    try:
        prom = FakeProm()
        prom.set("llama", ttft_p99_s=float("inf"))
        h = make_harness(constant(5), prom=prom)
        h.tick(T0)
    finally:
        logging.getLogger("rlscale").removeHandler(handler)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    (d,) = [x for x in lines if x["msg"] == "decision"]
    assert (d["target"], d["action"], d["current"], d["desired"], d["policy"]) == (
        "llm/llama",
        "Scaled",
        3,
        5,
        "scripted",
    )
    assert "gate: Scale (3 -> 5)" in d["steps"] and d["level"] == "info"


def test_the_run_loop_ticks_until_stopped(make_harness) -> None:
    cfg = controller_config(tick_s=0.05)
    h = make_harness(constant(3), config=cfg, clock=time.time)
    stop = threading.Event()
    t = threading.Thread(target=h.controller.run, args=(stop,))
    t.start()
    time.sleep(0.4)
    stop.set()
    t.join(5)
    assert not t.is_alive() and h.controller.ticks >= 3


def test_a_policy_error_without_fallback_holds(make_harness) -> None:
    h = make_harness(raising())
    (res,) = h.tick(T0)
    assert (res.action, res.record.reason) == ("Hold", "PolicyError")
    assert h.kube.replicas("llm", "llama") == 3
