"""The controller's own Prometheus metrics, on its own registry, served on a port.

| series | type | labels |
|---|---|---|
| rlscale_desired_replicas | gauge | namespace, deployment: the decision (after clamps), written or not |
| rlscale_proposed_replicas | gauge | the policy's proposal before the guard and the clamps |
| rlscale_current_replicas | gauge | the serving count: spec.replicas read from the API (less the pool held, sleeping tier) |
| rlscale_ready_replicas, rlscale_starting_replicas, rlscale_terminating_replicas | gauge | from the pods |
| rlscale_warm_replicas | gauge | the observed pool: pods asleep (sleeping tier) or the placeholder's spec.replicas (node tiers); 0 without `standby:` |
| rlscale_warm_replicas_target | gauge | the pool the controller aims for (W, after its clamps; a target with `standby:`) |
| rlscale_warm_replicas_proposed | gauge | the warm pool the policy asked for |
| rlscale_standby_actions_total | counter | + action (wake, sleep, scale_placeholder), result (ok, failed, deferred, dry_run) |
| rlscale_decisions_total | counter | + action (Scaled, DryRun, NoChange, Hold, Failed, ...), reason |
| rlscale_fallbacks_total | counter | + mode (fallback_policy, hold), cause |
| rlscale_clamps_total | counter | + clamp (ScaleUpLimit, ..., and the guards: WaitingForStartingReplicas, NoScaleDownOnMissingData, NoScaleDownAfterStart, NoScaleDownAfterMetricsGap, NoScaleDownOnPartialWindow) |
| rlscale_shield_firings_total | counter | + kind (ShieldFloor, ShieldQueue, ShieldConsolidation, ShieldHandover): the run-time shield changed the proposal |
| rlscale_shield_handover | gauge | 1 while the shield's rule decides (after K breached intervals, until recovery) |
| rlscale_scale_writes_total | counter | + result (Scaled, AlreadyScaled, ForeignChange, NotLeader, Failed) |
| rlscale_policy_latency_seconds | histogram | policy: encode + decide |
| rlscale_gpu_hours_total | counter | GPU-hours held by the target's pods (ready + starting + terminating) |
| rlscale_metrics_trusted | gauge | 1 when the last reading had every required field, fresh |
| rlscale_metrics_age_seconds | gauge | age of the newest sample behind the reading |
| rlscale_metrics_missing | gauge | + field: 1 when that field was missing |
| rlscale_paused, rlscale_dry_run | gauge | the kill switch / shadow mode of each target |
| rlscale_leader | gauge | 1 while this process holds the Lease (or runs without election) |
| rlscale_tick_duration_seconds | histogram | one tick over all targets |
| rlscale_last_tick_timestamp_seconds | gauge | when the last tick ended |
"""

from __future__ import annotations

import math
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from rlscale.deploy.decide import GUARD_REASONS, METRICS_HOLDS, SHIELD_REASONS, DecisionRecord
from rlscale.deploy.promql import QUERY_FIELDS

_T = ("namespace", "deployment")
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
_TICK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# GUARD_REASONS (rlscale.deploy.decide): limits on the proposal, counted as clamps with the
# safety module's own.
__all__ = ["GUARD_REASONS", "OPERATOR_HOLDS", "ControllerMetrics", "MetricsServer"]
# Holds an operator asked for: not fallbacks.
OPERATOR_HOLDS = ("Paused", "ManualOverride", "ScaledToZero")


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.desired = Gauge(
            "rlscale_desired_replicas",
            "Replicas this controller decided (after clamps), written or not.",
            _T,
            registry=r,
        )
        self.proposed = Gauge(
            "rlscale_proposed_replicas",
            "Replicas the policy proposed, before the guard and the clamps.",
            _T,
            registry=r,
        )
        self.current = Gauge(
            "rlscale_current_replicas", "spec.replicas of the Deployment.", _T, registry=r
        )
        self.ready = Gauge(
            "rlscale_ready_replicas", "Ready pods of the Deployment.", _T, registry=r
        )
        self.starting = Gauge(
            "rlscale_starting_replicas",
            "Pods created but not Ready yet (capacity on its way).",
            _T,
            registry=r,
        )
        self.terminating = Gauge(
            "rlscale_terminating_replicas", "Pods terminating.", _T, registry=r
        )
        self.warm = Gauge(
            "rlscale_warm_replicas",
            "Observed warm pool: pods asleep, or the placeholder's replicas.",
            _T,
            registry=r,
        )
        self.warm_target = Gauge(
            "rlscale_warm_replicas_target", "Warm pool the controller aims for.", _T, registry=r
        )
        self.warm_proposed = Gauge(
            "rlscale_warm_replicas_proposed",
            "Warm pool the policy asked for.",
            _T,
            registry=r,
        )
        self.standby_actions = Counter(
            "rlscale_standby_actions",
            "Warm-pool actions (wake, sleep, scale_placeholder) by result.",
            (*_T, "action", "result"),
            registry=r,
        )
        self.decisions = Counter(
            "rlscale_decisions",
            "Decisions by action and reason.",
            (*_T, "action", "reason"),
            registry=r,
        )
        self.fallbacks = Counter(
            "rlscale_fallbacks",
            "Decisions not made by the primary policy.",
            (*_T, "mode", "cause"),
            registry=r,
        )
        self.clamps = Counter(
            "rlscale_clamps", "Limits that changed a proposal.", (*_T, "clamp"), registry=r
        )
        self.shield = Counter(
            "rlscale_shield_firings",
            "Proposals the run-time shield changed, by kind.",
            (*_T, "kind"),
            registry=r,
        )
        self.shield_handover = Gauge(
            "rlscale_shield_handover",
            "1 while the run-time shield's rule decides.",
            _T,
            registry=r,
        )
        self.writes = Counter(
            "rlscale_scale_writes",
            "Scale subresource writes by result.",
            (*_T, "result"),
            registry=r,
        )
        self.policy_latency = Histogram(
            "rlscale_policy_latency_seconds",
            "Policy decision latency (encode + decide).",
            ("policy",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.gpu_hours = Counter(
            "rlscale_gpu_hours", "GPU-hours held by the target's pods.", _T, registry=r
        )
        self.trusted = Gauge(
            "rlscale_metrics_trusted",
            "1 when the last reading had every required field, fresh.",
            _T,
            registry=r,
        )
        self.age = Gauge(
            "rlscale_metrics_age_seconds",
            "Age of the newest sample behind the last reading.",
            _T,
            registry=r,
        )
        self.missing = Gauge(
            "rlscale_metrics_missing",
            "1 when the field was missing in the last reading.",
            (*_T, "field"),
            registry=r,
        )
        self.paused = Gauge(
            "rlscale_paused", "1 while the kill-switch annotation is set.", _T, registry=r
        )
        self.dry_run = Gauge(
            "rlscale_dry_run", "1 when the target runs in dry-run (shadow) mode.", _T, registry=r
        )
        self.leader = Gauge(
            "rlscale_leader", "1 while this process leads (or runs without election).", registry=r
        )
        self.tick_duration = Histogram(
            "rlscale_tick_duration_seconds",
            "One tick over all targets.",
            buckets=_TICK_BUCKETS,
            registry=r,
        )
        self.last_tick = Gauge(
            "rlscale_last_tick_timestamp_seconds", "Unix time the last tick ended.", registry=r
        )

    def publish(
        self,
        record: DecisionRecord,
        action: str,
        *,
        dry_run: bool,
        gpu_hours: float = 0.0,
        write_result: str | None = None,
        trusted: bool | None = None,
    ) -> None:
        ns, name = record.target.split("/", 1)
        t = (ns, name)
        self.dry_run.labels(*t).set(1 if dry_run else 0)
        rs = record.replicas
        if rs is not None:
            self.current.labels(*t).set(rs.desired)
            self.ready.labels(*t).set(rs.ready)
            self.starting.labels(*t).set(rs.starting)
            self.terminating.labels(*t).set(rs.terminating)
            self.paused.labels(*t).set(1 if rs.paused else 0)
        if record.standby is None:
            self.warm.labels(*t).set(0)
        if record.warm_proposed is not None:
            self.warm_proposed.labels(*t).set(record.warm_proposed)
        if record.desired is not None:
            self.desired.labels(*t).set(record.desired)
        if record.proposed is not None:
            self.proposed.labels(*t).set(record.proposed)
        self.decisions.labels(*t, action, record.reason).inc()
        if record.source == "fallback":
            self.fallbacks.labels(*t, "fallback_policy", record.fallback_cause or "unknown").inc()
        elif record.outcome == "Hold" and record.reason not in OPERATOR_HOLDS:
            self.fallbacks.labels(*t, "hold", record.reason).inc()
        for s in record.steps:
            if s.name == "clamp" or s.reason in GUARD_REASONS:
                self.clamps.labels(*t, s.reason).inc()
        for s in record.steps:
            if s.name == "shield" and s.reason in SHIELD_REASONS:
                self.shield.labels(*t, s.reason).inc()
        if record.proposed is not None:  # a tick that reached the policy (and the shield)
            self.shield_handover.labels(*t).set(1 if record.shield_handover else 0)
        if write_result is not None:
            self.writes.labels(*t, write_result).inc()
        if record.policy_latency_s is not None and record.policy is not None:
            self.policy_latency.labels(record.policy).observe(record.policy_latency_s)
        if gpu_hours > 0:
            self.gpu_hours.labels(*t).inc(gpu_hours)
        m = record.metrics
        if trusted is None:
            trusted = not record.missing and record.reason not in METRICS_HOLDS
        self.trusted.labels(*t).set(1 if trusted else 0)
        if m is not None:
            missing = set(record.missing)
            for f in QUERY_FIELDS:
                self.missing.labels(*t, f).set(1 if f in missing else 0)

    def publish_standby(self, record: DecisionRecord, outcome: Any | None) -> None:
        """The pool's gauges and action counters; `outcome` a controller `StandbyOutcome`."""
        plan = record.standby
        if plan is None:
            return
        t = tuple(record.target.split("/", 1))
        self.warm.labels(*t).set(plan.pool_observed)
        self.warm_target.labels(*t).set(plan.pool)
        act = self.standby_actions
        if plan.deferred:
            act.labels(*t, "sleep", "deferred").inc(len(plan.deferred))
        if outcome is None:
            return
        if outcome.dry_run:
            for action, n in (
                ("wake", len(plan.wake)),
                ("sleep", len(plan.sleep)),
                ("scale_placeholder", int(plan.placeholder_replicas is not None)),
            ):
                if n:
                    act.labels(*t, action, "dry_run").inc(n)
            return
        for action, ok, failed in (
            ("wake", outcome.woken, outcome.wake_failed),
            ("sleep", outcome.slept, outcome.sleep_failed),
        ):
            if ok:
                act.labels(*t, action, "ok").inc(len(ok))
            if failed:
                act.labels(*t, action, "failed").inc(len(failed))
        if outcome.placeholder is not None:
            act.labels(*t, "scale_placeholder", "ok" if outcome.placeholder.ok else "failed").inc()

    def set_age(self, target: str, age_s: float | None) -> None:
        ns, name = target.split("/", 1)
        self.age.labels(ns, name).set(
            age_s if age_s is not None and math.isfinite(age_s) else math.nan
        )


class MetricsServer:
    """prometheus_client's HTTP server for one registry; `stop()` closes the socket."""

    def __init__(
        self, registry: CollectorRegistry, address: str = "0.0.0.0", port: int = 9102
    ) -> None:
        self._server: Any
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, address, registry=registry)
        self.port: int = self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
