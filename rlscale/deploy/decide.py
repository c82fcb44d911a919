"""The decision for one target at one tick: a pure function of injected inputs and an explicit
`now` (Knative's decider), written as the HPA's pipeline with a reason at every step.

    observe   replica state from the API      none -> Hold(ReplicaStateUnavailable)
              a spec.replicas change that is not ours -> ExternalChange: no writes for
              `manual_override_hold_s` (respected, not fought)
              spec.replicas 0 with min_replicas > 0 -> Hold(ScaledToZero), as the HPA does
    metrics   Prometheus reading              error -> Hold(MetricsUnavailable)
                                              stale -> Hold(MetricsStale)
              required fields missing: the fallback policy if its own fields are there,
              else Hold(MetricsMissing)
    policy    primary.decide(window)          raises -> fallback (PolicyError), else Hold
    missing   fallback on partial data may scale up, never down (NoScaleDownOnMissingData)
    guard     no scale-up on top of pods still starting (WaitingForStartingReplicas), unless
              the oldest has been starting longer than `starting_guard_s` (stuck)
    clamp     rlscale.safety.clamp: tolerance, stabilisation, rate limits, min/max, GPU budget
              (the same code the simulator trains under), one reason per limiter that bit
    gate      desired == current -> NoChange; kill-switch annotation -> Hold(Paused);
              inside a manual-override hold -> Hold(ManualOverride); else Scale

The outcome is one of Scale, NoChange, Hold; `reason` names what decided it; `steps` lists every
step's reason in order. "No data" is a named outcome, never a guess: every Hold keeps the
current count, so missing metrics never scale anything down.

Mutates only `TargetMemory` (the window of trusted intervals, the clamp's history, what was last
seen and written), which the controller keeps per target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rlscale.contract import IntervalMetrics
from rlscale.deploy.kube import ReplicaState
from rlscale.deploy.metrics import MetricsReading
from rlscale.deploy.promql import QUERY_FIELDS
from rlscale.policies.base import Decision, Policy
from rlscale.safety import ClampState, SafetyLimits, clamp

SCALE, NO_CHANGE, HOLD = "Scale", "NoChange", "Hold"


@dataclass(frozen=True)
class Step:
    name: str  # observe | metrics | policy | fallback | missing | guard | clamp | gate
    reason: str
    detail: str = ""


@dataclass
class TargetMemory:
    """What one target's decider remembers between ticks."""

    limits: SafetyLimits
    interval_s: float
    window_len: int = 8
    window: list[IntervalMetrics] = field(default_factory=list)
    clamp_state: ClampState = field(init=False)
    last_seen_replicas: int | None = None
    last_written: int | None = None
    manual_until_s: float = -math.inf

    def __post_init__(self) -> None:
        self.clamp_state = ClampState.empty(1, self.limits, self.interval_s)

    def push(self, m: IntervalMetrics) -> None:
        self.window.append(m)
        del self.window[: -self.window_len]

    def forget_last_change(self) -> None:
        """The clamp recorded a change that was not made (dry run, gate, failed write): drop it
        from the rate-limit history; the proposal stays in the stabilisation windows."""
        s = self.clamp_state
        if s.cursor:
            slot = (s.cursor - 1) % len(s.times_s)
            s.added[:, slot] = 0
            s.removed[:, slot] = 0


@dataclass(frozen=True)
class DecideOptions:
    manual_override_hold_s: float = 600.0
    starting_guard_s: float | None = 900.0
    dry_run: bool = False  # a shadow never holds for external changes: they are the autoscaler it shadows
    required: tuple[str, ...] = QUERY_FIELDS
    fallback_required: tuple[str, ...] = ("arrival_rps", "requests_waiting", "requests_running")


@dataclass(frozen=True)
class DecisionRecord:
    target: str
    time_s: float
    outcome: str  # Scale | NoChange | Hold
    reason: str
    current: int | None  # spec.replicas read
    proposed: int | None  # the policy's proposal
    desired: int | None  # after the guard and the clamps: what a write sets
    steps: tuple[Step, ...]
    policy: str | None = None  # name of the policy that proposed
    source: str | None = None  # primary | fallback
    fallback_cause: str | None = None  # MetricsMissing | PolicyError
    clamps: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    metrics: IntervalMetrics | None = None
    replicas: ReplicaState | None = None
    policy_latency_s: float | None = None
    warm_proposed: int | None = None

    @property
    def wants_write(self) -> bool:
        return self.outcome == SCALE

    def explain(self) -> str:
        return "; ".join(f"{s.name}: {s.reason}" + (f" ({s.detail})" if s.detail else "") for s in self.steps)


def to_interval(reading: MetricsReading, replicas: ReplicaState, interval_s: float) -> IntervalMetrics:
    """The same record the simulator produces: PromQL fields + replica counts from the API."""
    v = reading.values
    return IntervalMetrics(
        time_s=reading.time_s,
        interval_s=interval_s,
        **{f: float(v.get(f, math.nan)) for f in QUERY_FIELDS},
        replicas_desired=float(replicas.desired),
        replicas_ready=float(replicas.ready),
        replicas_starting=float(replicas.starting),
        replicas_warm=0.0,
        replicas_draining=float(replicas.terminating),
    )


def _checked(d: object) -> Decision:
    if not isinstance(d, Decision):
        raise TypeError(f"decide() returned {type(d).__name__}, expected a Decision")
    r = d.replicas
    if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) or r < 0:
        raise ValueError(f"proposed replicas {r!r} is not a count")
    return d


def decide(
    *,
    target: str,
    now_s: float,
    replicas: ReplicaState | None,
    reading: MetricsReading,
    policy: Policy,
    fallback: Policy | None,
    memory: TargetMemory,
    options: DecideOptions = DecideOptions(),
    replicas_error: str | None = None,
    perf_counter: Callable[[], float] = time.perf_counter,
) -> DecisionRecord:
    steps: list[Step] = []

    def hold(reason: str, detail: str, *, current: int | None, reset_window: bool, **kw: object) -> DecisionRecord:
        steps.append(Step("gate", reason, detail))
        if reset_window:
            memory.window.clear()
        return DecisionRecord(
            target, now_s, HOLD, reason, current, kw.pop("proposed", None), current, tuple(steps),
            replicas=replicas, missing=reading.missing, **kw,  # type: ignore[arg-type]
        )

    if replicas is None:
        return hold("ReplicaStateUnavailable", replicas_error or "the API could not be read", current=None, reset_window=True)
    current = replicas.desired
    steps.append(
        Step(
            "observe", "ReplicaState",
            f"spec {current}, ready {replicas.ready}, starting {replicas.starting}, terminating {replicas.terminating}",
        )
    )
    last_seen = memory.last_seen_replicas
    if last_seen is not None and current != last_seen and current != memory.last_written:
        if not options.dry_run and options.manual_override_hold_s > 0:
            memory.manual_until_s = now_s + options.manual_override_hold_s
        steps.append(Step("observe", "ExternalChange", f"spec.replicas {last_seen} -> {current}, not by this controller"))
    memory.last_seen_replicas = current
    memory.last_written = None
    if current == 0 and memory.limits.min_replicas > 0:
        # The HPA's convention: a Deployment scaled to zero by hand is switched off, not starved.
        return hold("ScaledToZero", "spec.replicas is 0; scale it up (or set min_replicas: 0) to hand it back",
                    current=current, reset_window=True)

    m = to_interval(reading, replicas, memory.interval_s)
    if reading.error is not None:
        return hold("MetricsUnavailable", reading.error, current=current, reset_window=True, metrics=m)
    if reading.stale:
        return hold("MetricsStale", reading.why, current=current, reset_window=True, metrics=m)
    primary_ok = reading.has(options.required)
    fallback_ok = fallback is not None and reading.has(options.fallback_required)
    if not primary_ok:
        lacking = [f for f in options.required if f in reading.missing]
        steps.append(Step("metrics", "MetricsMissing", ", ".join(lacking)))
        if not fallback_ok:
            return hold("MetricsMissing", ", ".join(lacking), current=current, reset_window=True, metrics=m)
    else:
        steps.append(Step("metrics", "MetricsTrusted", f"age {reading.age_s:.0f} s" if reading.age_s is not None else ""))
    memory.push(m)
    window: Sequence[IntervalMetrics] = memory.window

    decision: Decision | None = None
    source: str | None = None
    cause: str | None = None
    used: Policy | None = None
    latency_s: float | None = None
    if primary_ok:
        t0 = perf_counter()
        try:
            decision = _checked(policy.decide(window))
            source, used = "primary", policy
            steps.append(Step("policy", "PolicyProposal", f"{policy.name}: {decision.reason}"))
        except Exception as e:  # noqa: BLE001 - any policy failure is a named outcome, never a crash
            cause = "PolicyError"
            steps.append(Step("policy", "PolicyError", f"{policy.name}: {type(e).__name__}: {e}"[:300]))
        latency_s = perf_counter() - t0
    else:
        cause = "MetricsMissing"
    if decision is None and fallback is not None and fallback_ok:
        t0 = perf_counter()
        try:
            decision = _checked(fallback.decide(window))
            source, used = "fallback", fallback
            steps.append(Step("fallback", "FallbackProposal", f"{fallback.name} ({cause}): {decision.reason}"))
        except Exception as e:  # noqa: BLE001
            steps.append(Step("fallback", "PolicyError", f"{fallback.name}: {type(e).__name__}: {e}"[:300]))
        latency_s = (latency_s or 0.0) + perf_counter() - t0
    if decision is None or used is None:
        return hold(
            "PolicyError", "no policy produced a proposal", current=current, reset_window=False, metrics=m,
            fallback_cause=cause, policy_latency_s=latency_s,
        )

    proposed = int(math.ceil(decision.replicas))
    want = proposed
    if not primary_ok and want < current:
        steps.append(Step("missing", "NoScaleDownOnMissingData", f"{want} -> {current}"))
        want = current
    guard = options.starting_guard_s
    if guard is not None and replicas.starting > 0 and want > current:
        age = replicas.oldest_starting_s or 0.0
        if age < guard:
            steps.append(
                Step("guard", "WaitingForStartingReplicas", f"{replicas.starting} starting (oldest {age:.0f} s): {want} -> {current}")
            )
            want = current
        else:
            steps.append(Step("guard", "StartingReplicasStuck", f"oldest has been starting {age:.0f} s >= {guard:.0f} s"))

    clamped = clamp(want, current, now_s, memory.limits, memory.clamp_state, warm=0)
    for r in clamped.reasons:
        steps.append(Step("clamp", r, f"{want} -> {clamped.replicas}"))
    desired = clamped.replicas

    common = dict(
        policy=used.name, source=source, fallback_cause=cause if source == "fallback" else None,
        clamps=clamped.reasons, missing=reading.missing, metrics=m, replicas=replicas,
        policy_latency_s=latency_s, warm_proposed=decision.warm_replicas,
    )
    decided_by = "PolicyProposal" if source == "primary" else "FallbackProposal"
    if desired == current:
        memory.forget_last_change()
        steps.append(Step("gate", NO_CHANGE, f"stays at {current}"))
        return DecisionRecord(target, now_s, NO_CHANGE, decided_by, current, proposed, desired, tuple(steps), **common)  # type: ignore[arg-type]
    if replicas.paused:
        memory.forget_last_change()
        steps.append(Step("gate", "Paused", f"would scale {current} -> {desired}; the kill-switch annotation is set"))
        return DecisionRecord(target, now_s, HOLD, "Paused", current, proposed, desired, tuple(steps), **common)  # type: ignore[arg-type]
    if now_s < memory.manual_until_s:
        memory.forget_last_change()
        left = memory.manual_until_s - now_s
        steps.append(Step("gate", "ManualOverride", f"would scale {current} -> {desired}; respecting a manual change for {left:.0f} s more"))
        return DecisionRecord(target, now_s, HOLD, "ManualOverride", current, proposed, desired, tuple(steps), **common)  # type: ignore[arg-type]
    steps.append(Step("gate", SCALE, f"{current} -> {desired}"))
    return DecisionRecord(target, now_s, SCALE, decided_by, current, proposed, desired, tuple(steps), **common)  # type: ignore[arg-type]
