"""The live controller: a plain loop around a `tick(now_s)` over all targets.

Per target and tick (targets in parallel, `workers` at a time):

    observe   Deployment + pods (Kube.observe, bounded backoff)   -> ReplicaState or an error
    read      Prometheus (PrometheusSource.read, one query)        -> MetricsReading
    decide    rlscale.deploy.decide (pure, reasons per step)        -> DecisionRecord
    act       Scale: write through /scale unless dry-run; leadership re-checked before every
              attempt; the clamp forgets a change that was not made
    standby   (a target with `standby:`) sleeping tier: /is_sleeping on the Running not-Ready
              pods before deciding (ReplicaState.sleeping), the drain check (/metrics) on the
              Ready pods the plan would sleep, then the wakes and sleeps (HTTP to the pods,
              `workers` at a time); node tiers: the placeholder's Scale read, then written.
              A pod that fails to wake or sleep is a WakeFailed/SleepFailed step, a Warning
              Event and a counted result; the next tick plans again from what is observed.
              Dry-run reports the plan and makes no call that changes anything.
    publish   metrics, one JSON log line, Events (every scale or would-be scale; a Warning on
              entering a fallback or a hold, not on every tick of it)

A non-leader does nothing but keep its `rlscale_leader` gauge at 0. An exception inside a target's
tick (a bug) is logged and that target holds; the loop keeps running.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from rlscale.deploy.config import ControllerConfig, TargetConfig
from rlscale.deploy.decide import (
    GUARD_REASONS,
    HOLD,
    SCALE,
    SLEEPING,
    DecideOptions,
    DecisionRecord,
    Step,
    TargetMemory,
    decide,
    drain,
    make_shield,
)
from rlscale.deploy.exporter import OPERATOR_HOLDS, ControllerMetrics
from rlscale.deploy.kube import (
    ApplyResult,
    EventRecorder,
    Kube,
    KubeApi,
    ReplicaState,
    ScaleState,
)
from rlscale.deploy.leader import LeaderElector, LeaderLoop
from rlscale.deploy.metrics import (
    MetricsReading,
    PrometheusSource,
    PromQuery,
    TargetQueries,
    prepare,
)
from rlscale.deploy.policies import TargetPolicies, build_target_policies, check_tick
from rlscale.deploy.retry import Backoff, ControllerError
from rlscale.deploy.standby import HttpSleepApi, SleepApi, StandbyError, call_all

log = logging.getLogger("rlscale.deploy")

# Holds worth a Warning event when a target enters them (not repeated while it stays there).
_WARN_ON_ENTER = (
    "ReplicaStateUnavailable",
    "MetricsUnavailable",
    "MetricsStale",
    "MetricsMissing",
    "MetricsFrozen",
    "PolicyError",
)


@dataclass
class RuntimeTarget:
    config: TargetConfig
    policies: TargetPolicies
    queries: TargetQueries
    memory: TargetMemory
    options: DecideOptions
    dry_run: bool
    condition: str = "Ok"  # the last fallback/hold condition, for transition events
    last_tick_s: float | None = None
    sleep_api: SleepApi | None = None  # the sleeping tier's HTTP edge
    deferred: frozenset[str] = frozenset()  # pods whose sleep was deferred last tick (events)

    @property
    def key(self) -> str:
        return self.config.key


@dataclass(frozen=True)
class StandbyOutcome:
    """What acting on a `StandbyPlan` did (dry-run: nothing, `dry_run` set)."""

    woken: tuple[str, ...] = ()
    wake_failed: tuple[tuple[str, str], ...] = ()  # (pod, error)
    slept: tuple[str, ...] = ()
    sleep_failed: tuple[tuple[str, str], ...] = ()
    placeholder: ApplyResult | None = None
    dry_run: bool = False
    wake_s: float | None = None  # wall seconds the wake calls took (all pods, in parallel)


@dataclass(frozen=True)
class TickResult:
    record: DecisionRecord
    action: str  # Scaled | DryRun | NoChange | Hold | Failed | ForeignChange | NotLeader
    apply: ApplyResult | None = None
    standby: StandbyOutcome | None = None


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


def make_target(
    config: ControllerConfig,
    target: TargetConfig,
    policies: TargetPolicies | None = None,
    cache: dict[Any, Any] | None = None,
    sleep_api: SleepApi | None = None,
) -> RuntimeTarget:
    pol = policies or build_target_policies(target, cache)
    check_tick(pol, config.tick_s, f"target {target.key}")
    dry = config.target_dry_run(target)
    options = DecideOptions(
        manual_override_hold_s=target.manual_override_hold_s,
        starting_guard_s=target.starting_guard_s,
        dry_run=dry,
        required=target.metrics.required_fields,
        fallback_required=target.metrics.fallback_required,
        standby_tier=target.standby.tier if target.standby is not None else None,
    )
    shield = make_shield(target.shield_config(), pol.profile, pol.slo, interval_s=config.tick_s)
    memory = TargetMemory(pol.limits, config.tick_s, window_len=pol.window, shield=shield)
    sb = target.standby
    if sb is not None and sb.tier == SLEEPING and sleep_api is None:
        sleep_api = HttpSleepApi(
            request_timeout_s=sb.request_timeout_s,
            probe_timeout_s=sb.probe_timeout_s,
            metrics_path=sb.drain.metrics_path,
            workers=sb.workers,
        )
    return RuntimeTarget(target, pol, prepare(target), memory, options, dry, sleep_api=sleep_api)


@dataclass
class Controller:
    config: ControllerConfig
    targets: list[RuntimeTarget]
    kube: Kube
    source: PrometheusSource
    metrics: ControllerMetrics = field(default_factory=ControllerMetrics)
    events: EventRecorder | None = None
    elector: LeaderElector | None = None
    clock: Callable[[], float] = time.time
    workers: int = 8
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, min(self.workers, len(self.targets))),
            thread_name_prefix="rlscale-tick",
        )
        self._leader_loop: LeaderLoop | None = None
        self._led = self.elector is None  # whether the last tick ran as the leader
        self.ticks = 0
        for t in self.targets:
            self.metrics.dry_run.labels(t.config.namespace, t.config.deployment).set(
                1 if t.dry_run else 0
            )
        self.metrics.leader.set(0 if self.elector is not None else 1)

    # -- one tick --------------------------------------------------------------------------------
    def is_leader(self, now_s: float | None = None) -> bool:
        if self.elector is None:
            return True
        return self.elector.is_leader(self.clock() if now_s is None else now_s)

    def tick(self, now_s: float) -> list[TickResult]:
        leader = self.is_leader(now_s)
        self.metrics.leader.set(1 if leader else 0)
        if leader and not self._led:
            # The clamp's memory is per process: what the previous leader proposed and changed
            # is not in it, so no scale-down until it has refilled (the first election of a
            # fresh process is a start, already unsettled).
            for t in self.targets:
                if t.memory.last_seen_replicas is not None or t.memory.fresh_since_s is not None:
                    t.memory.lead_again()
        self._led = leader
        if not leader:
            return []
        t0 = time.perf_counter()
        results = list(self._pool.map(lambda t: self._tick_target(t, now_s), self.targets))
        self.metrics.tick_duration.observe(time.perf_counter() - t0)
        self.metrics.last_tick.set(self.clock())
        self.ticks += 1
        return results

    def _tick_target(self, t: RuntimeTarget, now_s: float) -> TickResult:
        try:
            return self._tick_target_unguarded(t, now_s)
        except Exception as e:  # noqa: BLE001 - one target's bug must not stop the others
            log.exception(
                "target tick failed",
                extra={"fields": {"target": t.key, "error": f"{type(e).__name__}: {e}"}},
            )
            reading = MetricsReading.unavailable(now_s, f"internal error: {type(e).__name__}")
            record = DecisionRecord(
                t.key, now_s, HOLD, "InternalError", None, None, None, (), missing=reading.missing
            )
            return TickResult(record, HOLD)

    def _tick_target_unguarded(self, t: RuntimeTarget, now_s: float) -> TickResult:
        cfg, sb = t.config, t.config.standby
        sleeping_tier = sb is not None and sb.tier == SLEEPING
        replicas_error: str | None = None
        replicas: ReplicaState | None
        try:
            replicas = self.kube.observe(
                cfg.namespace,
                cfg.deployment,
                now_s,
                self.config.pause_annotation,
                port_name=sb.port_name if sleeping_tier and sb is not None else None,
                default_port=sb.port if sb is not None else 8000,
            )
        except ControllerError as e:
            replicas, replicas_error = None, str(e)
        if replicas is not None and sleeping_tier:
            replicas = self._asleep(t, replicas)
        placeholder: ScaleState | None = None
        placeholder_error: str | None = None
        if sb is not None and sb.placeholder is not None:
            try:
                placeholder = self.kube.read_scale(cfg.namespace, sb.placeholder)
            except ControllerError as e:
                placeholder_error = f"placeholder {sb.placeholder}: {e}"
        reading = self.source.read(t.queries, now_s)
        self.metrics.set_age(t.key, reading.age_s)
        fallback = t.policies.fallback.policy if t.policies.fallback is not None else None
        record = decide(
            target=t.key,
            now_s=now_s,
            replicas=replicas,
            reading=reading,
            policy=t.policies.primary.policy,
            fallback=fallback,
            memory=t.memory,
            options=t.options,
            replicas_error=replicas_error,
            placeholder=placeholder,
            placeholder_error=placeholder_error,
        )
        if record.standby is not None and record.standby.sleep_count > 0 and sb is not None:
            record = self._drain(t, record, sb.drain.max_requests)
        action, applied = self._act(t, record)
        standby: StandbyOutcome | None = None
        if record.standby is not None:
            record, standby = self._act_standby(t, record)
        self._publish(t, record, action, applied, now_s, trusted=reading.trusted, standby=standby)
        return TickResult(record, action, applied, standby)

    # -- the warm pool's HTTP edge ---------------------------------------------------------------
    def _asleep(self, t: RuntimeTarget, replicas: ReplicaState) -> ReplicaState:
        """The starting pods that answer /is_sleeping true are pool members; one that does not
        answer is still starting (a cold start's server is not up yet)."""
        candidates = replicas.probe_candidates()
        if t.sleep_api is None or not candidates:
            return replicas
        assert t.config.standby is not None
        answers = call_all(t.sleep_api.is_sleeping, candidates, t.config.standby.workers)
        return replicas.with_sleeping({n for n, a in answers.items() if a is True})

    def _drain(self, t: RuntimeTarget, record: DecisionRecord, max_requests: int) -> DecisionRecord:
        """The drain check on the Ready pods the plan may sleep (reads only, dry-run too)."""
        plan = record.standby
        assert plan is not None and t.sleep_api is not None and t.config.standby is not None
        loads = call_all(
            t.sleep_api.requests_in_flight, plan.sleep_candidates, t.config.standby.workers
        )
        in_flight: dict[str, float | str] = {
            n: (str(v) if isinstance(v, StandbyError) else float(v)) for n, v in loads.items()
        }
        plan, steps = drain(plan, in_flight, max_requests)
        return replace(record, standby=plan, steps=record.steps + steps)

    def _act_standby(
        self, t: RuntimeTarget, record: DecisionRecord
    ) -> tuple[DecisionRecord, StandbyOutcome]:
        """Wake, sleep, scale the placeholder, as the plan says; each failure a step."""
        plan = record.standby
        assert plan is not None and t.config.standby is not None
        if t.dry_run:
            return record, StandbyOutcome(dry_run=True)
        if not (plan.wake or plan.sleep or plan.placeholder_replicas is not None):
            return record, StandbyOutcome()
        if not self.is_leader():
            return record, StandbyOutcome()
        steps: list[Step] = []
        workers = t.config.standby.workers
        woken: list[str] = []
        wake_failed: list[tuple[str, str]] = []
        slept: list[str] = []
        sleep_failed: list[tuple[str, str]] = []
        api = t.sleep_api
        wake_s: float | None = None
        if api is not None:
            t0 = time.monotonic()
            woke = call_all(api.wake_up, plan.wake, workers)
            wake_s = time.monotonic() - t0 if plan.wake else None
            for name, r in woke.items():
                if isinstance(r, StandbyError):
                    wake_failed.append((name, str(r)))
                    t.memory.wake_failed.add(name)
                    # covered next tick: another sleeping pod, or the cold start already in spec
                    steps.append(Step("standby", "WakeFailed", str(r)[:300]))
                else:
                    woken.append(name)
                    t.memory.wake_failed.discard(name)
            for name, r in call_all(api.sleep, plan.sleep, workers).items():
                if isinstance(r, StandbyError):
                    sleep_failed.append((name, str(r)))
                    steps.append(Step("standby", "SleepFailed", str(r)[:300]))
                else:
                    slept.append(name)
        placeholder: ApplyResult | None = None
        sb = t.config.standby
        if plan.placeholder_replicas is not None and sb.placeholder is not None:
            placeholder = self.kube.apply(
                t.config.namespace,
                sb.placeholder,
                plan.placeholder_replicas,
                plan.placeholder_current if plan.placeholder_current is not None else 0,
                plan.placeholder_resource_version,
                may_write=lambda: self.is_leader(),
            )
            if not placeholder.ok:
                steps.append(
                    Step(
                        "standby",
                        "ScalePlaceholderFailed",
                        f"{placeholder.outcome}: {placeholder.error}",
                    )
                )
        outcome = StandbyOutcome(
            tuple(woken),
            tuple(wake_failed),
            tuple(slept),
            tuple(sleep_failed),
            placeholder,
            wake_s=wake_s,
        )
        return replace(record, steps=record.steps + tuple(steps)), outcome

    def _act(self, t: RuntimeTarget, record: DecisionRecord) -> tuple[str, ApplyResult | None]:
        plan = record.standby
        pool_write = plan is not None and plan.spec_replicas is not None
        if record.outcome != SCALE and not pool_write:
            return record.outcome, None
        if t.dry_run:
            if record.outcome == SCALE:
                t.memory.forget_last_change()
            return "DryRun", None
        assert (
            record.desired is not None
            and record.current is not None
            and record.replicas is not None
        )
        # With a pool, spec.replicas is what the plan says (serving + sleeping pool, or serving).
        spec_target, spec_current = record.desired, record.current
        if plan is not None and plan.spec_replicas is not None and plan.spec_current is not None:
            spec_target, spec_current = plan.spec_replicas, plan.spec_current
        cfg = t.config
        result = self.kube.apply(
            cfg.namespace,
            cfg.deployment,
            spec_target,
            spec_current,
            record.replicas.resource_version,
            may_write=lambda: self.is_leader(),
        )
        # Remember what we tried even if the answer was lost: the next read then tells our own
        # write apart from someone else's.
        t.memory.last_written = record.desired
        landed = result.ok or result.maybe_landed
        if plan is not None and plan.tier == SLEEPING and landed:
            t.memory.pool_held = plan.pool
        if result.ok:
            return "Scaled", result
        if not result.maybe_landed and record.outcome == SCALE:
            # Only a write known not to have landed leaves the rate limits' history.
            t.memory.forget_last_change()
        return result.outcome, result

    # -- publishing ------------------------------------------------------------------------------
    def _publish(
        self,
        t: RuntimeTarget,
        record: DecisionRecord,
        action: str,
        applied: ApplyResult | None,
        now_s: float,
        *,
        trusted: bool | None = None,
        standby: StandbyOutcome | None = None,
    ) -> None:
        gpu_hours = 0.0
        rs = record.replicas
        if rs is not None and t.last_tick_s is not None:
            dt = min(max(now_s - t.last_tick_s, 0.0), 2 * self.config.tick_s)
            gpu_hours = (
                (rs.ready + rs.starting + rs.terminating)
                * t.memory.limits.gpus_per_replica
                * dt
                / 3600.0
            )
        t.last_tick_s = now_s
        self.metrics.publish(
            record,
            action,
            dry_run=t.dry_run,
            gpu_hours=gpu_hours,
            write_result=applied.outcome if applied is not None else None,
            trusted=trusted,
        )
        if record.standby is not None:
            self.metrics.publish_standby(record, standby)
        m = record.metrics
        fields = {
            "target": t.key,
            "action": action,
            "outcome": record.outcome,
            "reason": record.reason,
            "current": record.current,
            "proposed": record.proposed,
            "desired": record.desired,
            "policy": record.policy,
            "source": record.source,
            "fallback_cause": record.fallback_cause,
            "clamps": list(record.clamps),
            "missing": list(record.missing),
            "dry_run": t.dry_run,
            "steps": record.explain(),
            "policy_latency_ms": round(record.policy_latency_s * 1000, 3)
            if record.policy_latency_s is not None
            else None,
        }
        if rs is not None:
            fields.update(
                ready=rs.ready, starting=rs.starting, terminating=rs.terminating, paused=rs.paused
            )
        if m is not None:
            fields.update(
                arrival_rps=_round(m.arrival_rps),
                requests_waiting=_round(m.requests_waiting),
                kv_cache_usage=_round(m.kv_cache_usage),
                ttft_p95_s=_round(m.ttft_p95_s),
                tpot_p95_s=_round(m.tpot_p95_s),
            )
        if applied is not None:
            fields.update(write=applied.outcome, attempts=applied.attempts, error=applied.error)
        plan = record.standby
        if plan is not None:
            fields.update(
                pool=plan.pool,
                pool_observed=plan.pool_observed,
                wake=[p.name for p in plan.wake],
                sleep=[p.name for p in plan.sleep],
                placeholder=plan.placeholder_replicas,
            )
            if standby is not None:
                fields.update(
                    wake_failed=[n for n, _ in standby.wake_failed],
                    sleep_failed=[n for n, _ in standby.sleep_failed],
                )
        level = (
            logging.WARNING
            if action in ("Failed", "ForeignChange") or record.reason in _WARN_ON_ENTER
            else logging.INFO
        )
        log.log(level, "decision", extra={"fields": fields})
        self._events(t, record, action, applied, now_s)
        if plan is not None:
            self._standby_events(t, record, standby, now_s)

    def _standby_events(
        self,
        t: RuntimeTarget,
        record: DecisionRecord,
        standby: StandbyOutcome | None,
        now_s: float,
    ) -> None:
        plan = record.standby
        assert plan is not None
        deferred = frozenset(n for n, _ in plan.deferred)
        entered_deferral = bool(deferred - t.deferred)
        t.deferred = deferred
        if self.events is None or not self.config.events:
            return
        cfg = t.config
        uid = record.replicas.uid if record.replicas is not None else ""

        def emit(reason: str, message: str, warning: bool = False) -> None:
            assert self.events is not None
            self.events.record(
                cfg.namespace, cfg.deployment, uid, reason, message[:1024], now_s, warning=warning
            )

        if standby is not None and standby.dry_run:
            parts = []
            if plan.wake:
                parts.append(f"wake {', '.join(p.name for p in plan.wake)}")
            if plan.sleep:
                parts.append(f"sleep {', '.join(p.name for p in plan.sleep)}")
            if plan.placeholder_replicas is not None:
                parts.append(
                    f"scale placeholder {plan.placeholder_current} -> {plan.placeholder_replicas}"
                )
            if parts:
                emit(
                    "DryRunStandby",
                    f"Would {'; '.join(parts)} (dry run, nothing done); pool {plan.pool}",
                )
            return
        if standby is not None:
            if standby.woken:
                emit(
                    "WakeReplica",
                    f"Woke {', '.join(standby.woken)}: serving {plan.serving}, pool {plan.pool}",
                )
            for name, err in standby.wake_failed:
                emit("WakeFailed", f"Could not wake {name}: {err}", warning=True)
            if standby.slept:
                emit(
                    "SleepReplica",
                    f"Put {', '.join(standby.slept)} to sleep: serving {plan.serving}, pool {plan.pool}",
                )
            for name, err in standby.sleep_failed:
                emit("SleepFailed", f"Could not put {name} to sleep: {err}", warning=True)
            p = standby.placeholder
            if p is not None and p.ok:
                emit(
                    "ScalePlaceholder",
                    f"Placeholder {cfg.standby.placeholder if cfg.standby else ''} "
                    f"{plan.placeholder_current} -> {plan.placeholder_replicas} (warm-node pool)",
                )
            elif p is not None:
                emit(
                    "ScalePlaceholderFailed",
                    f"Placeholder not scaled: {p.outcome}: {p.error}",
                    warning=True,
                )
        if entered_deferral:
            emit("SleepDeferred", "; ".join(f"{n}: {why}" for n, why in plan.deferred))

    def _events(
        self,
        t: RuntimeTarget,
        record: DecisionRecord,
        action: str,
        applied: ApplyResult | None,
        now_s: float,
    ) -> None:
        if self.events is None or not self.config.events:
            return
        cfg = t.config
        uid = record.replicas.uid if record.replicas is not None else ""
        why = f"{record.reason}" + (
            f" ({record.policy}: {_policy_reason(record)})" if record.policy else ""
        )
        if record.clamps:
            why += f"; clamped by {', '.join(record.clamps)}"

        def emit(reason: str, message: str, warning: bool = False) -> None:
            assert self.events is not None
            self.events.record(
                cfg.namespace, cfg.deployment, uid, reason, message, now_s, warning=warning
            )

        if action == "Scaled":
            emit(
                "SuccessfulRescale",
                f"New size: {record.desired} (was {record.current}); reason: {why}",
            )
        elif action == "DryRun":
            emit(
                "DryRunRescale",
                f"Would scale {record.current} -> {record.desired} (dry run, nothing written); reason: {why}",
            )
        elif action in ("Failed", "ForeignChange") and applied is not None:
            emit(
                "FailedRescale",
                f"Scale {record.current} -> {record.desired} not written: {applied.error}",
                warning=True,
            )
        condition = "Ok"
        if record.source == "fallback":
            condition = f"Fallback:{record.fallback_cause}"
        elif record.outcome == HOLD or record.reason in GUARD_REASONS:
            condition = record.reason
        if condition != t.condition:
            previous, t.condition = t.condition, condition
            detail = "; ".join(
                s.detail
                for s in record.steps
                if s.name in ("gate", "metrics", "policy", "fallback", "missing", "guard", "settle")
                and s.detail
            )
            if condition == "Ok":
                emit("Recovered", f"Deciding with {record.policy} again (was {previous})")
            elif condition.startswith("Fallback:"):
                emit(
                    "FallbackPolicy",
                    f"Deciding with the fallback {record.policy}: {record.fallback_cause}; {detail}"[
                        :1024
                    ],
                    warning=True,
                )
            elif condition in _WARN_ON_ENTER:
                emit(
                    "HoldingScale",
                    f"Holding at {record.current}: {condition}; {detail}"[:1024],
                    warning=True,
                )
            elif condition in OPERATOR_HOLDS or condition in GUARD_REASONS:
                emit(condition, detail or condition)

    # -- the loop --------------------------------------------------------------------------------
    def start(self) -> Controller:
        """Start leader election (if configured) on its own thread."""
        if self.elector is not None and self._leader_loop is None:
            self._leader_loop = LeaderLoop(self.elector, self.clock).start()
        return self

    def run(self, stop: threading.Event, *, max_ticks: int | None = None) -> None:
        """Tick every `tick_s` until `stop` is set (or `max_ticks` ticks ran); a tick that
        overruns is followed at once by the next, without a backlog."""
        self.start()
        tick_s = self.config.tick_s
        # Paced by the monotonic clock: a wall-clock jump (NTP) must not stall or rush the loop.
        next_at = self.monotonic()
        done = 0
        while not stop.is_set():
            try:
                ran = self.tick(self.clock())
                if ran or self.elector is None:
                    done += 1
            except Exception as e:  # noqa: BLE001 - the loop outlives any one tick
                log.exception(
                    "tick failed", extra={"fields": {"error": f"{type(e).__name__}: {e}"}}
                )
            if max_ticks is not None and done >= max_ticks:
                break
            next_at += tick_s
            now = self.monotonic()
            if next_at < now:
                next_at = now
            stop.wait(max(0.0, next_at - now))

    def close(self, release: bool = True) -> None:
        """Stop election (releasing the Lease) and the worker threads; idempotent."""
        if self._leader_loop is not None:
            self._leader_loop.stop(release=release)
            self._leader_loop = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.source.close()
        for edge in (self.source.client, self.kube.api, *(t.sleep_api for t in self.targets)):
            close = getattr(edge, "close", None)
            if callable(close):
                close()


def _round(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def _policy_reason(record: DecisionRecord) -> str:
    for s in record.steps:
        if s.name in ("policy", "fallback") and s.reason in ("PolicyProposal", "FallbackProposal"):
            return s.detail.split(": ", 1)[-1][:300]
    return ""


def build_controller(
    config: ControllerConfig,
    *,
    kube_api: KubeApi | None = None,
    prom: PromQuery | None = None,
    metrics: ControllerMetrics | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    identity: str | None = None,
    targets: Sequence[RuntimeTarget] | None = None,
) -> Controller:
    """Everything from the config: policies (refusing bad checkpoints here, at start-up), the
    API client, Prometheus, Events, leader election. Tests pass fakes for the edges."""
    cache: dict[Any, Any] = {}
    built = (
        list(targets)
        if targets is not None
        else [make_target(config, t, cache=cache) for t in config.targets]
    )
    for t in built:
        for w in t.policies.warnings:
            log.warning("target warning", extra={"fields": {"target": t.key, "warning": w}})
    ident = identity or config.identity or default_identity()
    if kube_api is None:
        from rlscale.deploy.kube import OfficialKubeApi

        kube_api = OfficialKubeApi.from_config(config.kubernetes, ident)
    if prom is None:
        from rlscale.deploy.metrics import PrometheusHttp

        prom = PrometheusHttp(config.prometheus)
    r = config.kubernetes.retry
    backoff = Backoff(
        attempts=r.attempts,
        base_delay_s=r.base_delay_s,
        max_delay_s=r.max_delay_s,
        deadline_s=r.deadline_s,
    )
    elector = None
    le = config.leader_election
    if le.enabled:
        elector = LeaderElector(
            kube_api,
            config.lease_namespace,
            le.lease_name,
            ident,
            lease_duration_s=le.lease_duration_s,
            renew_deadline_s=le.renew_deadline_s,
            retry_period_s=le.retry_period_s,
        )
    m = metrics or ControllerMetrics()
    if elector is not None:
        elector.on_change = lambda leader: m.leader.set(1 if leader else 0)
    return Controller(
        config=config,
        targets=built,
        kube=Kube(kube_api, backoff, sleep=sleep),
        source=PrometheusSource(prom, concurrency=config.prometheus.concurrency),
        metrics=m,
        events=EventRecorder(kube_api, instance=ident) if config.events else None,
        elector=elector,
        clock=clock,
        workers=config.prometheus.concurrency,
    )
