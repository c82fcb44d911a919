"""The decision for one target at one tick: a pure function of injected inputs and an explicit
`now` (Knative's decider), written as the HPA's pipeline with a reason at every step.

    observe   replica state from the API      none -> Hold(ReplicaStateUnavailable)
              a spec.replicas change that is not ours -> ExternalChange: no writes for
              `manual_override_hold_s` (respected, not fought)
              spec.replicas 0 with min_replicas > 0 -> Hold(ScaledToZero), as the HPA does
    metrics   Prometheus reading              error -> Hold(MetricsUnavailable)
                                              stale -> Hold(MetricsStale)
                                              frozen -> Hold(MetricsFrozen): a pod with requests
                                              in it whose token counter never moved in the window
              required fields missing: the fallback policy if its own fields are there,
              else Hold(MetricsMissing)
    policy    primary.decide(window)          raises -> fallback (PolicyError), else Hold
    shield    the run-time shield (`rlscale.serving.shield`, the code the simulator trains and
              evaluates under), when the target has one: ShieldFloor (a scale-up raised to the
              token-aware rule's count), ShieldQueue (no scale-down into a queue),
              ShieldConsolidation (the survivors could not carry the load), ShieldHandover (the
              rule decides after K breached intervals while the policy held or shrank)
    missing   fallback on partial data may scale up, never down (NoScaleDownOnMissingData)
    guard     no scale-up to a count the pods still starting already cover
              (WaitingForStartingReplicas: proposal <= ready + starting), unless the oldest has
              been starting longer than `starting_guard_s` (stuck)
    clamp     rlscale.safety.clamp: tolerance, stabilisation, rate limits, min/max, GPU budget
              (the same code the simulator trains under), one reason per limiter that bit
    settle    no scale-down the data or the memory cannot back yet, applied after the clamp so
              the stabilisation window keeps filling with real proposals meanwhile:
              NoScaleDownAfterStart   until `settle_s` (the down-stabilisation window and the
                                      down rate-limit periods) of fresh data after a controller
                                      start or a leader change: the clamp's memory of proposals
                                      and changes is per process
              NoScaleDownAfterMetricsGap  the same after a metrics outage, staleness or freeze:
                                      holds add nothing to the stabilisation window
              NoScaleDownOnPartialWindow  a Ready pod not scraped yet, a pod whose rate window
                                      is not covered by samples, or a pod gone inside the
                                      window: the rate fields are partial, not low
    gate      desired == current -> NoChange; kill-switch annotation -> Hold(Paused);
              inside a manual-override hold -> Hold(ManualOverride); else Scale

    standby   (a target with `standby:`) the warm pool's plan, `_standby` -> `StandbyPlan`; below

The outcome is one of Scale, NoChange, Hold; `reason` names what decided it; `steps` lists every
step's reason in order. "No data" is a named outcome, never a guess: every Hold keeps the
current count, so missing metrics never scale anything down.

Each stage is one function with a typed result: `_observe`, `_trust_metrics` -> `_Trusted`,
`_propose` -> `_Proposal`, `_guard`, `safety.clamp` -> `Clamped`, `_settle` -> `Clamped`, `_gate`
-> `DecisionRecord`; a stage that holds returns the Hold record instead, and `decide` returns it
as it is. A guard or settle step that kept the count is the NoChange's `reason`.

The warm pool (`standby`, `rlscale.deploy.standby` for the HTTP edge). N is the serving target
(the pipeline's `desired`), W the pool target (the policy's `warm_replicas`, None keeping the
pool as it is, within [0, `max_warm_replicas`] and, with `max_gpus`, within the GPUs N leaves:
N + W <= max_gpus / gpus_per_replica; the clamp gets the pool held as its `warm`, as the
simulator's counts standby against the GPU budget). N is bounded by min/max_replicas as before.

  sleeping tier   pool members are the target's own pods in vLLM sleep mode, counted in
                  spec.replicas = N + W. The pipeline sees the serving view: `current` =
                  spec.replicas - the pool this controller holds (`TargetMemory.pool_held`; after
                  a start or a leader change, the pods observed asleep: anything not asleep
                  counts as serving, so the pool is never over-counted into a scale-up). Each
                  tick, from the observed pods (ready, sleeping):
                    WakeReplica   min(N - ready, sleeping) pods when serving is short: a scale-up
                                  wakes first (seconds), and spec.replicas = N + W refills the
                                  pool with cold starts
                    SleepReplica  min(ready - N, W - sleeping) Ready pods when the pool is short
                                  and serving has more Ready pods than N (a refill pod became
                                  Ready, a scale-down); `drain` picks idle pods (vLLM's own
                                  running + waiting <= drain.max_requests), newest first, and
                                  defers busy or unreadable ones (SleepDeferred) to the next tick
                    PoolRefill / PoolShrink  spec.replicas moves with W at an unchanged N
                  A spec decrease makes the ReplicaSet delete not-ready pods first (a sleeping
                  one): the rule above then sleeps a surplus Ready pod and the pool is whole.
  node tiers      (`warm_node`, `preloaded_node`) spec.replicas = N; the pool is the placeholder
                  Deployment, set to W through its `/scale` (ScalePlaceholder).

Fail safe: on any Hold (PoolHeld) nothing sleeps and the pool keeps its size; a wake (serving up
to the count it already has) is still made, except when paused, inside a manual-override hold,
or without a replica state. Dry-run computes the plan and the controller writes nothing.

Mutates only `TargetMemory` (the window of trusted intervals, the clamp's history, what was last
seen and written), which the controller keeps per target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rlscale.contract import IntervalMetrics
from rlscale.deploy.config import SLOConfig
from rlscale.deploy.kube import PodAddress, ReplicaState, ScaleState
from rlscale.deploy.metrics import MetricsReading, PodCoverage
from rlscale.deploy.promql import QUERY_FIELDS
from rlscale.policies.base import Decision, Policy
from rlscale.profiles.model import ServiceProfile
from rlscale.safety import Clamped, ClampState, SafetyLimits, clamp, clamp_warm
from rlscale.serving.shield import FIRING_REASONS, NONE, Shield, ShieldConfig

SCALE, NO_CHANGE, HOLD = "Scale", "NoChange", "Hold"

# Steps that limit a proposal without being the clamp's own limiters (counted as clamps, and the
# NoChange's reason when they kept the count).
GUARD_REASONS: tuple[str, ...] = (
    "WaitingForStartingReplicas",
    "NoScaleDownOnMissingData",
    "NoScaleDownAfterStart",
    "NoScaleDownAfterMetricsGap",
    "NoScaleDownOnPartialWindow",
)
# Holds on data that cannot be trusted; each also restarts the settling time.
METRICS_HOLDS: tuple[str, ...] = (
    "MetricsUnavailable",
    "MetricsStale",
    "MetricsMissing",
    "MetricsFrozen",
)
START, LEADER_CHANGE = "controller start", "leader change"
# The shield's firings (a step reason each; the Scale's or NoChange's reason when it set the count).
SHIELD_REASONS: tuple[str, ...] = FIRING_REASONS[1:]
# The warm pool's steps (`_standby`, `drain`, and the controller's results of acting on them).
STANDBY_REASONS: tuple[str, ...] = (
    "WakeReplica",
    "SleepReplica",
    "SleepDeferred",
    "PoolRefill",
    "PoolShrink",
    "PoolClamped",
    "PoolHeld",
    "ScalePlaceholder",
    "PlaceholderUnavailable",
    "WakeFailed",
    "SleepFailed",
    "ScalePlaceholderFailed",
)
# Holds under which the pool is left entirely alone: no wake either (an operator's hand is on it,
# or the pods are unknown).
_HANDS_OFF = ("Paused", "ManualOverride", "ReplicaStateUnavailable", "ScaledToZero")
SLEEPING = "sleeping"


@dataclass(frozen=True)
class Step:
    name: str  # observe | metrics | policy | fallback | missing | guard | clamp | settle | gate
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
    # Since when the data has been fresh without a break (None: not since `unsettled_by`).
    fresh_since_s: float | None = None
    unsettled_by: str = START
    shield: Shield | None = None  # the target's run-time shield (batch of 1), or None
    # Sleeping tier: the pool spec.replicas holds beside the serving count (None: not known since
    # a start or a leader change; the observed sleeping pods then).
    pool_held: int | None = None
    # Pods whose last wake failed: woken after the others (a failed wake is covered by another).
    wake_failed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.clamp_state = ClampState.empty(1, self.limits, self.interval_s)

    @property
    def settle_s(self) -> float:
        """How long fresh data must back a scale-down after a start, a leader change or a
        metrics gap: the down-stabilisation window (its max must see real proposals) and the
        down rate-limit periods (their history must hold real changes)."""
        down = self.limits.scale_down
        return max([down.stabilization_window_s, *(p.period_s for p in down.policies), 0.0])

    def unsettle(self, cause: str) -> None:
        """The memory or the data cannot back a scale-down until `settle_s` of fresh data."""
        self.fresh_since_s = None
        self.unsettled_by = cause

    def lead_again(self) -> None:
        """Leadership (re)acquired: the clamp's history lacks the other leader's changes, and a
        spec.replicas the other leader wrote is no manual change."""
        self.unsettle(LEADER_CHANGE)
        self.last_seen_replicas = None
        self.last_written = None
        self.pool_held = None
        self.window.clear()

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
    dry_run: bool = (
        False  # a shadow never holds for external changes: they are the autoscaler it shadows
    )
    required: tuple[str, ...] = QUERY_FIELDS
    fallback_required: tuple[str, ...] = ("arrival_rps", "requests_waiting", "requests_running")
    standby_tier: str | None = None  # None: the target has no warm pool


@dataclass(frozen=True)
class StandbyPlan:
    """What the warm pool needs this tick (`_standby`), then which pods sleep (`drain`)."""

    tier: str
    serving: int | None  # N, the serving target
    pool: int  # W, the pool target
    pool_observed: int  # pods asleep, or the placeholder's spec.replicas
    spec_current: int | None  # the target's spec.replicas read
    spec_replicas: int | None = None  # the target's spec.replicas to write; None: no write
    wake: tuple[PodAddress, ...] = ()
    sleep_count: int = 0  # Ready pods to put to sleep, before the drain check
    sleep_candidates: tuple[PodAddress, ...] = ()  # newest first
    sleep: tuple[PodAddress, ...] = ()  # chosen by `drain`
    deferred: tuple[tuple[str, str], ...] = ()  # (pod, why) not slept this tick
    placeholder_replicas: int | None = None  # the placeholder's spec.replicas to write
    placeholder_current: int | None = None
    placeholder_resource_version: str = ""
    steps: tuple[Step, ...] = ()


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
    shield: str | None = None  # the shield's firing (a SHIELD_REASONS entry), None if it let it be
    shield_handover: bool = False  # the shield's rule is deciding
    standby: StandbyPlan | None = None  # the warm pool's plan (a target with `standby:`)

    def explain(self) -> str:
        return "; ".join(
            f"{s.name}: {s.reason}" + (f" ({s.detail})" if s.detail else "") for s in self.steps
        )


def to_interval(
    reading: MetricsReading, replicas: ReplicaState, interval_s: float
) -> IntervalMetrics:
    """The same record the simulator produces: PromQL fields + replica counts from the API."""
    v = reading.values
    return IntervalMetrics(
        time_s=reading.time_s,
        interval_s=interval_s,
        **{f: float(v.get(f, math.nan)) for f in QUERY_FIELDS},
        replicas_desired=float(replicas.desired),
        replicas_ready=float(replicas.ready),
        replicas_starting=float(replicas.starting),
        replicas_warm=float(replicas.sleeping),
        replicas_draining=float(replicas.terminating),
    )


def _checked(d: object) -> Decision:
    if not isinstance(d, Decision):
        raise TypeError(f"decide() returned {type(d).__name__}, expected a Decision")
    r = d.replicas
    if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) or r < 0:
        raise ValueError(f"proposed replicas {r!r} is not a count")
    return d


@dataclass
class _Tick:
    """One tick's inputs and the steps recorded so far; every stage appends to `steps`."""

    target: str
    now_s: float
    replicas: ReplicaState | None
    reading: MetricsReading
    memory: TargetMemory
    steps: list[Step] = field(default_factory=list)

    def step(self, name: str, reason: str, detail: str = "") -> None:
        self.steps.append(Step(name, reason, detail))

    def hold(
        self,
        reason: str,
        detail: str,
        *,
        current: int | None,
        reset_window: bool,
        metrics: IntervalMetrics | None = None,
        fallback_cause: str | None = None,
        policy_latency_s: float | None = None,
    ) -> DecisionRecord:
        """Keep the current count; `reset_window` when the data it was decided on is not to be trusted."""
        self.step("gate", reason, detail)
        if reset_window:
            self.memory.window.clear()
        if reason in METRICS_HOLDS:
            self.memory.unsettle(f"metrics gap ({reason})")
        return DecisionRecord(
            self.target,
            self.now_s,
            HOLD,
            reason,
            current,
            None,
            current,
            tuple(self.steps),
            replicas=self.replicas,
            missing=self.reading.missing,
            metrics=metrics,
            fallback_cause=fallback_cause,
            policy_latency_s=policy_latency_s,
        )


def _observe(tick: _Tick, replicas: ReplicaState, options: DecideOptions) -> DecisionRecord | None:
    """Record the replica state and notice changes that are not ours; a Hold, or None to go on."""
    memory, current = tick.memory, replicas.desired
    tick.step(
        "observe",
        "ReplicaState",
        f"spec {current}, ready {replicas.ready}, starting {replicas.starting}, terminating {replicas.terminating}",
    )
    last_seen = memory.last_seen_replicas
    if last_seen is not None and current != last_seen and current != memory.last_written:
        if not options.dry_run and options.manual_override_hold_s > 0:
            memory.manual_until_s = tick.now_s + options.manual_override_hold_s
        tick.step(
            "observe",
            "ExternalChange",
            f"spec.replicas {last_seen} -> {current}, not by this controller",
        )
    memory.last_seen_replicas = current
    memory.last_written = None
    if current == 0 and memory.limits.min_replicas > 0:
        # The HPA's convention: a Deployment scaled to zero by hand is switched off, not starved.
        return tick.hold(
            "ScaledToZero",
            "spec.replicas is 0; scale it up (or set min_replicas: 0) to hand it back",
            current=current,
            reset_window=True,
        )
    return None


@dataclass(frozen=True)
class _Trusted:
    """The interval the policies see, and which of them have the fields they need."""

    interval: IntervalMetrics
    primary_ok: bool
    fallback_ok: bool


def _trust_metrics(
    tick: _Tick, replicas: ReplicaState, fallback: Policy | None, options: DecideOptions
) -> _Trusted | DecisionRecord:
    """Unavailable, stale, or missing what every policy needs -> Hold; else push the interval."""
    reading, current = tick.reading, replicas.desired
    m = to_interval(reading, replicas, tick.memory.interval_s)
    if reading.error is not None:
        return tick.hold(
            "MetricsUnavailable", reading.error, current=current, reset_window=True, metrics=m
        )
    if reading.stale:
        return tick.hold("MetricsStale", reading.why, current=current, reset_window=True, metrics=m)
    if reading.frozen:
        return tick.hold(
            "MetricsFrozen", reading.why, current=current, reset_window=True, metrics=m
        )
    primary_ok = reading.has(options.required)
    fallback_ok = fallback is not None and reading.has(options.fallback_required)
    if not primary_ok:
        lacking = ", ".join(f for f in options.required if f in reading.missing)
        tick.step("metrics", "MetricsMissing", lacking)
        if not fallback_ok:
            return tick.hold(
                "MetricsMissing", lacking, current=current, reset_window=True, metrics=m
            )
    else:
        tick.step(
            "metrics",
            "MetricsTrusted",
            f"age {reading.age_s:.0f} s" if reading.age_s is not None else "",
        )
    tick.memory.push(m)
    if tick.memory.fresh_since_s is None:
        tick.memory.fresh_since_s = tick.now_s
    return _Trusted(m, primary_ok, fallback_ok)


@dataclass(frozen=True)
class _Proposal:
    decision: Decision
    policy: Policy
    source: str  # primary | fallback
    fallback_cause: str | None  # why the fallback proposed: MetricsMissing | PolicyError
    latency_s: float | None  # both policies' time, when both ran


def _run(
    policy: Policy,
    window: Sequence[IntervalMetrics],
    perf_counter: Callable[[], float],
    spent_s: float = 0.0,
) -> tuple[Decision | None, str, float]:
    """(decision or None, the error when it raised, spent_s + its own time)."""
    t0 = perf_counter()
    try:
        decision, error = _checked(policy.decide(window)), ""
    except Exception as e:  # noqa: BLE001 - any policy failure is a named outcome, never a crash
        decision, error = None, f"{policy.name}: {type(e).__name__}: {e}"[:300]
    return decision, error, spent_s + perf_counter() - t0


def _propose(
    tick: _Tick,
    current: int,
    trusted: _Trusted,
    policy: Policy,
    fallback: Policy | None,
    perf_counter: Callable[[], float],
) -> _Proposal | DecisionRecord:
    """The primary on complete data; the fallback when the primary raised or data is partial;
    Hold(PolicyError) when neither proposed."""
    window: Sequence[IntervalMetrics] = tick.memory.window
    cause: str | None = "MetricsMissing"
    latency_s: float | None = None
    if trusted.primary_ok:
        decision, error, latency_s = _run(policy, window, perf_counter)
        if decision is not None:
            tick.step("policy", "PolicyProposal", f"{policy.name}: {decision.reason}")
            return _Proposal(decision, policy, "primary", None, latency_s)
        cause = "PolicyError"
        tick.step("policy", "PolicyError", error)
    if fallback is not None and trusted.fallback_ok:
        decision, error, latency_s = _run(fallback, window, perf_counter, latency_s or 0.0)
        if decision is not None:
            tick.step(
                "fallback", "FallbackProposal", f"{fallback.name} ({cause}): {decision.reason}"
            )
            return _Proposal(decision, fallback, "fallback", cause, latency_s)
        tick.step("fallback", "PolicyError", error)
    return tick.hold(
        "PolicyError",
        "no policy produced a proposal",
        current=current,
        reset_window=False,
        metrics=trusted.interval,
        fallback_cause=cause,
        policy_latency_s=latency_s,
    )


def _guard(
    tick: _Tick, proposed: int, replicas: ReplicaState, primary_ok: bool, options: DecideOptions
) -> int:
    """No scale-down on partial data; no scale-up to a count the pods still starting already
    cover (ready + starting; unless they are stuck)."""
    current, want = replicas.desired, proposed
    if not primary_ok and want < current:
        tick.step("missing", "NoScaleDownOnMissingData", f"{want} -> {current}")
        want = current
    guard = options.starting_guard_s
    coming = replicas.ready + replicas.starting
    if guard is not None and replicas.starting > 0 and want > current:
        age = replicas.oldest_starting_s or 0.0
        if age < guard:
            if want <= coming:
                tick.step(
                    "guard",
                    "WaitingForStartingReplicas",
                    f"{replicas.ready} ready + {replicas.starting} starting (oldest {age:.0f} s) "
                    f"cover {want}: {want} -> {current}",
                )
                want = current
        else:
            tick.step(
                "guard",
                "StartingReplicasStuck",
                f"oldest has been starting {age:.0f} s >= {guard:.0f} s",
            )
    return want


def make_shield(
    config: ShieldConfig | None,
    profile: ServiceProfile,
    slo: SLOConfig | None,
    *,
    interval_s: float,
) -> Shield | None:
    """One target's shield (None: unshielded), for `TargetMemory.shield`, held to the target's
    SLO (the default SLO when it has none), on the controller's tick `interval_s`."""
    if config is None:
        return None
    slo = slo or SLOConfig()
    return Shield(
        config,
        profile,
        1,
        interval_s=interval_s,
        ttft_slo_s=slo.ttft_s,
        tpot_slo_s=slo.tpot_s,
        ttft_slo_s_per_1k_tokens=slo.ttft_s_per_1k_tokens,
    )


def _shield(tick: _Tick, proposed: int, current: int, trusted: _Trusted) -> int:
    """The shield's bound on the proposal, on the interval just trusted (the proposal as it is
    when the target has no shield)."""
    shield = tick.memory.shield
    if shield is None:
        return proposed
    r = shield.apply(
        np.array([float(proposed)]), np.array([float(current)]), trusted.interval.to_array()[None]
    )
    want = int(math.ceil(float(r.target[0]) - 1e-9))
    code = int(r.fired[0])
    if code != NONE:
        tick.step(
            "shield",
            FIRING_REASONS[code],
            f"{proposed} -> {want} (floor {r.floor[0]:.0f}, {r.capacity_rps[0]:.2f} req/s per "
            f"replica at the observed mix{', hand-over' if r.handover[0] else ''})",
        )
    return want


def _partial_window(coverage: PodCoverage, ready: int) -> str:
    """Why the rate fields cover less than every serving pod over the whole window ("" if they
    do, or if the checks are not configured)."""
    if coverage.reporting is not None and coverage.reporting < ready:
        return f"{coverage.reporting} of {ready} ready pods scraped"
    if coverage.reporting is not None and coverage.reporting > ready:
        # A terminating pod that is still scraped (a PodMonitor scrapes it until it exits) is
        # draining: its queue falls with no arrivals, and its series end inside the next window.
        return f"{coverage.reporting - ready} pod(s) scraped but not ready (terminating, draining)"
    if (
        coverage.covered is not None
        and coverage.reporting is not None
        and coverage.covered < coverage.reporting
    ):
        return f"{coverage.covered} of {coverage.reporting} pods' rate windows covered by samples"
    if (
        coverage.in_window is not None
        and coverage.reporting is not None
        and coverage.in_window > coverage.reporting
    ):
        return f"{coverage.in_window - coverage.reporting} pod(s) gone inside the rate window"
    return ""


def _settle(tick: _Tick, replicas: ReplicaState, clamped: Clamped) -> Clamped:
    """No scale-down before `settle_s` of fresh data since a start, a leader change or a metrics
    gap, nor on a partial rate window; after the clamp, so its windows keep the real proposal."""
    memory, current = tick.memory, replicas.desired
    if clamped.replicas >= current:
        return clamped
    since = memory.fresh_since_s if memory.fresh_since_s is not None else tick.now_s
    left = memory.settle_s - (tick.now_s - since)
    reason, detail = "", ""
    if left > 1e-9:
        reason = (
            "NoScaleDownAfterMetricsGap"
            if memory.unsettled_by.startswith("metrics")
            else "NoScaleDownAfterStart"
        )
        detail = f"after a {memory.unsettled_by}, {left:.0f} s more of fresh data needed"
    else:
        # a sleeping pod is still scraped (its gauges 0, its counters still): it reports, and
        # serves nothing, as the rate fields say
        detail = _partial_window(tick.reading.coverage, replicas.ready + replicas.sleeping)
        reason = "NoScaleDownOnPartialWindow" if detail else ""
    if not reason:
        return clamped
    tick.step("settle", reason, f"{detail}: {clamped.replicas} -> {current}")
    return Clamped(current, clamped.reasons)


def _gate(
    tick: _Tick,
    replicas: ReplicaState,
    trusted: _Trusted,
    proposal: _Proposal,
    proposed: int,
    clamped: Clamped,
) -> DecisionRecord:
    """NoChange, Hold(Paused), Hold(ManualOverride) or Scale; only Scale keeps the clamp's change."""
    memory, now_s, current, desired = tick.memory, tick.now_s, replicas.desired, clamped.replicas
    decided_by = "PolicyProposal" if proposal.source == "primary" else "FallbackProposal"
    fired = [s.reason for s in tick.steps if s.reason in SHIELD_REASONS]
    if fired:
        decided_by = fired[-1]
    guarded = [s.reason for s in tick.steps if s.reason in GUARD_REASONS]
    if desired == current:
        # A guard that kept the count decided it, not the policy.
        outcome, reason = NO_CHANGE, guarded[-1] if guarded else decided_by
        tick.step("gate", NO_CHANGE, f"stays at {current}")
    elif replicas.paused:
        outcome, reason = HOLD, "Paused"
        tick.step(
            "gate",
            "Paused",
            f"would scale {current} -> {desired}; the kill-switch annotation is set",
        )
    elif now_s < memory.manual_until_s:
        outcome, reason = HOLD, "ManualOverride"
        left = memory.manual_until_s - now_s
        tick.step(
            "gate",
            "ManualOverride",
            f"would scale {current} -> {desired}; respecting a manual change for {left:.0f} s more",
        )
    else:
        outcome, reason = SCALE, decided_by
        tick.step("gate", SCALE, f"{current} -> {desired}")
    if outcome != SCALE:
        memory.forget_last_change()
    return DecisionRecord(
        tick.target,
        now_s,
        outcome,
        reason,
        current,
        proposed,
        desired,
        tuple(tick.steps),
        policy=proposal.policy.name,
        source=proposal.source,
        fallback_cause=proposal.fallback_cause,
        clamps=clamped.reasons,
        missing=tick.reading.missing,
        metrics=trusted.interval,
        replicas=replicas,
        policy_latency_s=proposal.latency_s,
        warm_proposed=proposal.decision.warm_replicas,
        shield=fired[-1] if fired else None,
        shield_handover=bool(memory.shield is not None and memory.shield.handover[0]),
    )


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
    placeholder: ScaleState | None = None,
    placeholder_error: str | None = None,
) -> DecisionRecord:
    """The serving decision, then (a target with a warm pool) the pool's plan."""
    tier = options.standby_tier
    view, held = replicas, 0
    if tier is not None and replicas is not None:
        if tier == SLEEPING:
            if memory.pool_held is None:
                memory.pool_held = min(replicas.sleeping, replicas.desired)
            view = replace(replicas, desired=max(replicas.desired - memory.pool_held, 0))
            held = memory.pool_held
        else:
            held = placeholder.replicas if placeholder is not None else 0
    record = _decide_serving(
        target,
        now_s,
        view,
        reading,
        policy,
        fallback,
        memory,
        options,
        replicas_error,
        perf_counter,
        warm=held,
    )
    if tier is None:
        return record
    if replicas is None:
        return _with_plan(record, _standby_unknown(tier, record))
    plan = _standby(record, replicas, memory, tier, held, placeholder, placeholder_error)
    return _with_plan(record, plan)


def _with_plan(record: DecisionRecord, plan: StandbyPlan) -> DecisionRecord:
    return replace(record, standby=plan, steps=record.steps + plan.steps)


def _standby_unknown(tier: str, record: DecisionRecord) -> StandbyPlan:
    step = Step("standby", "PoolHeld", "no replica state: the pool is left as it is")
    return StandbyPlan(tier, None, 0, 0, None, steps=(step,))


def _pool_target(record: DecisionRecord, limits: SafetyLimits, held: int, steps: list[Step]) -> int:
    """W: the policy's pool (None: the pool held), within [0, max_warm_replicas] and the GPUs
    that N leaves under `max_gpus`; on a Hold, the pool held (no shrink, no growth)."""
    if record.outcome == HOLD:
        return held
    asked = record.warm_proposed if record.warm_proposed is not None else held
    pool = int(clamp_warm(np.array([float(asked)]), limits)[0])
    why = (
        f"{asked} -> {pool} (max_warm_replicas {limits.max_warm_replicas})" if pool != asked else ""
    )
    if limits.max_gpus is not None and record.desired is not None:
        room = max(limits.max_gpus // limits.gpus_per_replica - record.desired, 0)
        if pool > room:
            why = f"{asked} -> {room} (max_gpus {limits.max_gpus}: {record.desired} serving)"
            pool = room
    if why:
        steps.append(Step("standby", "PoolClamped", why))
    return pool


def _standby(
    record: DecisionRecord,
    replicas: ReplicaState,
    memory: TargetMemory,
    tier: str,
    held: int,
    placeholder: ScaleState | None,
    placeholder_error: str | None,
) -> StandbyPlan:
    """The pool's plan from the serving decision and the observed pods (the module docstring)."""
    steps: list[Step] = []
    serving = record.desired if record.desired is not None else record.current
    assert serving is not None
    holding = record.outcome == HOLD
    hands_off = record.reason in _HANDS_OFF
    pool = _pool_target(record, memory.limits, held, steps)
    if holding:
        steps.append(
            Step("standby", "PoolHeld", f"{record.reason}: no sleep, the pool stays at {held}")
        )
    spec = replicas.desired
    if tier != SLEEPING:
        plan = StandbyPlan(
            tier,
            serving,
            pool,
            placeholder.replicas if placeholder is not None else 0,
            spec,
            spec_replicas=serving if record.outcome == SCALE else None,
        )
        if placeholder is None:
            steps.append(
                Step(
                    "standby",
                    "PlaceholderUnavailable",
                    placeholder_error or "the placeholder's Scale could not be read",
                )
            )
            return replace(plan, steps=tuple(steps))
        if pool != placeholder.replicas and not holding:
            steps.append(Step("standby", "ScalePlaceholder", f"{placeholder.replicas} -> {pool}"))
            plan = replace(plan, placeholder_replicas=pool)
        return replace(
            plan,
            placeholder_current=placeholder.replicas,
            placeholder_resource_version=placeholder.resource_version,
            steps=tuple(steps),
        )
    asleep = replicas.sleeping_pods
    target_spec = serving + pool
    spec_write: int | None = None
    if record.outcome == SCALE:
        spec_write = target_spec
    elif not holding and target_spec != spec:
        reason = "PoolRefill" if pool > held else "PoolShrink"
        steps.append(
            Step("standby", reason, f"pool {held} -> {pool}: spec.replicas {spec} -> {target_spec}")
        )
        spec_write = target_spec
    wake: tuple[PodAddress, ...] = ()
    short = serving - replicas.ready
    if short > 0 and asleep and not hands_off:
        # the pods asleep longest first (their load is long finished), one that failed to wake
        # last: the next tick covers a failed wake with another pod
        memory.wake_failed &= {p.name for p in asleep}
        order = sorted(asleep, key=lambda p: (p.name in memory.wake_failed, -p.age_s, p.name))
        wake = tuple(order[:short])
        steps.append(
            Step(
                "standby",
                "WakeReplica",
                f"{len(wake)} of {len(asleep)} asleep: {replicas.ready} ready < {serving} serving "
                f"({', '.join(p.name for p in wake)})",
            )
        )
    sleep_count = 0
    if not holding and replicas.ready > serving and pool > len(asleep):
        sleep_count = min(replicas.ready - serving, pool - len(asleep))
        steps.append(
            Step(
                "standby",
                "SleepReplica",
                f"{sleep_count} wanted: {replicas.ready} ready > {serving} serving, "
                f"{len(asleep)} asleep < pool {pool}",
            )
        )
    return StandbyPlan(
        tier,
        serving,
        pool,
        len(asleep),
        spec,
        spec_replicas=spec_write,
        wake=wake,
        sleep_count=sleep_count,
        sleep_candidates=replicas.ready_pods if sleep_count else (),
        steps=tuple(steps),
    )


def drain(
    plan: StandbyPlan, in_flight: dict[str, float | str], max_requests: int
) -> tuple[StandbyPlan, tuple[Step, ...]]:
    """Which Ready pods sleep: up to `sleep_count` of those whose requests running + waiting
    (`in_flight`: a count, or why it could not be read) is at most `max_requests`, the idlest
    first, then the newest; the rest are deferred to the next tick. (plan, steps added)"""
    if plan.sleep_count <= 0:
        return plan, ()
    idle: list[tuple[float, int, PodAddress]] = []
    deferred: list[tuple[str, str]] = []
    for order, pod in enumerate(plan.sleep_candidates):
        load = in_flight.get(pod.name, "not read")
        if isinstance(load, str):
            deferred.append((pod.name, f"requests in flight unknown: {load}"))
        elif load > max_requests:
            deferred.append((pod.name, f"{load:g} requests in flight > {max_requests}"))
        else:
            idle.append((load, order, pod))
    idle.sort(key=lambda x: (x[0], x[1]))
    chosen = tuple(p for _, _, p in idle[: plan.sleep_count])
    steps: tuple[Step, ...] = ()
    if len(chosen) < plan.sleep_count:
        steps = (
            Step(
                "standby",
                "SleepDeferred",
                f"{plan.sleep_count - len(chosen)} of {plan.sleep_count} not drained: "
                + "; ".join(f"{n}: {why}" for n, why in deferred)[:600],
            ),
        )
    out = replace(
        plan,
        sleep=chosen,
        deferred=tuple(deferred) if len(chosen) < plan.sleep_count else (),
        steps=plan.steps + steps,
    )
    return out, steps


def _decide_serving(
    target: str,
    now_s: float,
    replicas: ReplicaState | None,
    reading: MetricsReading,
    policy: Policy,
    fallback: Policy | None,
    memory: TargetMemory,
    options: DecideOptions,
    replicas_error: str | None,
    perf_counter: Callable[[], float],
    *,
    warm: int,
) -> DecisionRecord:
    tick = _Tick(target, now_s, replicas, reading, memory)
    if replicas is None:
        return tick.hold(
            "ReplicaStateUnavailable",
            replicas_error or "the API could not be read",
            current=None,
            reset_window=True,
        )
    held = _observe(tick, replicas, options)
    if held is not None:
        return held
    trusted = _trust_metrics(tick, replicas, fallback, options)
    if isinstance(trusted, DecisionRecord):
        return trusted
    proposal = _propose(tick, replicas.desired, trusted, policy, fallback, perf_counter)
    if isinstance(proposal, DecisionRecord):
        return proposal
    proposed = int(math.ceil(proposal.decision.replicas))
    shielded = _shield(tick, proposed, replicas.desired, trusted)
    want = _guard(tick, shielded, replicas, trusted.primary_ok, options)
    clamped = clamp(want, replicas.desired, now_s, memory.limits, memory.clamp_state, warm=warm)
    for r in clamped.reasons:
        tick.step("clamp", r, f"{want} -> {clamped.replicas}")
    clamped = _settle(tick, replicas, clamped)
    return _gate(tick, replicas, trusted, proposal, proposed, clamped)
