"""How the upstream HPA table tests are expressed in rlscale terms (shared by the conformance tests).

The upstream fixtures (`pkg/controller/podautoscaler/*_test.go`) describe pods (phase, Ready,
deletion), per-pod samples in milli-units, a metric spec and the controller's memory
(recommendations, scale events). Here:

* pods become `PodSample`s, the pod-level view `HPAPolicy.decide(window, pods=...)` takes;
* a `Pods` metric reads one `IntervalMetrics` field per pod (`requests_waiting`, metric name
  `request_queue_size`); the unit does not matter to the algorithm, only value / target;
* a CPU `Resource` case is ported as that `Pods` metric only where the two are the same
  computation: every pod requests the same CPU, or no pod is missing its sample, and (for a
  scale-down with missing pods, which upstream fills at 100 % of the request) the target is
  100 %; its samples are usage / request in percent, the target is the utilisation target;
* an `Object` / `External` metric reads `arrival_rps` (metric name `arrival_rate`), the
  fleet-level value;
* the controller's recommendations and scale events become `ClampState` slots at negative
  times, the sync being at t = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlscale.contract import FIELDS, IntervalMetrics
from rlscale.policies.hpa import HPAConfig, HPAPolicy, PodSample, config_from_manifest
from rlscale.safety import ClampState, SafetyLimits, clamp

POD_FIELD = "requests_waiting"  # what a Pods metric reads per pod
POD_METRIC = "request_queue_size"
POD_FIELD_2 = "requests_running"  # a second Pods metric, for the two-metric cases
POD_METRIC_2 = "requests_running"
FLEET_FIELD = "arrival_rps"  # what an Object / External metric reads
FLEET_METRIC = "arrival_rate"


def milli(v: float) -> str:
    """An upstream milli-value as a quantity string (15000 -> "15000m" = 15)."""
    return f"{int(v)}m"


@dataclass(frozen=True)
class Pod:
    """One upstream fixture pod: `sample` None = no metric for it (a missing pod)."""

    sample: float | None = None  # milli-units, as upstream `levels`
    phase: str = "Running"
    ready: bool = True
    deleting: bool = False
    second: float | None = None  # a second metric's sample (milli), if any


def pod_samples(pods: Sequence[Pod]) -> list[PodSample]:
    out = []
    for i, p in enumerate(pods):
        values = {}
        if p.sample is not None:
            values[POD_FIELD] = p.sample / 1000.0
        if p.second is not None:
            values[POD_FIELD_2] = p.second / 1000.0
        out.append(PodSample(f"test-pod-{i}", p.phase, p.ready, p.deleting, values))  # type: ignore[arg-type]
    return out


def fixture_pods(
    n: int,
    levels: Sequence[float],
    *,
    ready: Sequence[bool] | None = None,
    phase: Sequence[str] | None = None,
    deleting: Sequence[bool] | None = None,
) -> list[Pod]:
    """Upstream's fixture: n pods, the i-th with levels[i] when there is one (else missing)."""
    return [
        Pod(
            sample=levels[i] if i < len(levels) else None,
            phase=phase[i] if phase is not None else "Running",
            ready=ready[i] if ready is not None else True,
            deleting=deleting[i] if deleting is not None else False,
        )
        for i in range(n)
    ]


def cpu_pods(
    usage_milli: Sequence[float], request_milli: float, n: int | None = None, **kw
) -> list[Pod]:
    """CPU usage as percent of an equal per-pod request (so the Pods metric equals the Resource
    metric's utilisation)."""
    levels = [u * 100.0 / request_milli * 1000.0 for u in usage_milli]  # percent, in milli
    return fixture_pods(n if n is not None else len(usage_milli), levels, **kw)


def pods_metric(target: str, name: str = POD_METRIC) -> dict:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": target},
        },
    }


def object_metric(target: str, kind: str = "Value") -> dict:
    key = "value" if kind == "Value" else "averageValue"
    return {
        "type": "Object",
        "object": {
            "describedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "some-deployment",
            },
            "metric": {"name": FLEET_METRIC},
            "target": {"type": kind, key: target},
        },
    }


def external_metric(target: str, kind: str = "Value") -> dict:
    key = "value" if kind == "Value" else "averageValue"
    return {
        "type": "External",
        "external": {
            "metric": {"name": FLEET_METRIC, "selector": {"matchLabels": {"label": "value"}}},
            "target": {"type": kind, key: target},
        },
    }


def hpa(
    metrics: list[dict],
    *,
    min_r: int = 1,
    max_r: int = 1000,
    behavior: dict | None = None,
    tolerances: tuple[float, float] | None = None,
) -> HPAConfig:
    """An HPA config; `tolerances` = upstream `Tolerances{scaleDown, scaleUp}` (a `behavior` with
    the per-direction tolerance fields; the tests that set it only compute replicas)."""
    spec: dict = {"minReplicas": min_r, "maxReplicas": max_r, "metrics": metrics}
    if tolerances is not None:
        behavior = dict(behavior or {})
        behavior.setdefault("scaleDown", {})["tolerance"] = f"{tolerances[0]:.6f}"
        behavior.setdefault("scaleUp", {})["tolerance"] = f"{tolerances[1]:.6f}"
    if behavior is not None:
        spec["behavior"] = behavior
    return config_from_manifest(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "test-hpa"},
            "spec": spec,
        },
        "<upstream case>",
    )


def interval(
    spec_replicas: int, pods: Sequence[Pod] = (), fleet_milli: float = float("nan")
) -> IntervalMetrics:
    """The IntervalMetrics of the sync: spec.replicas, ready/starting counts from the pods, the
    fleet-level Object/External value."""
    base = {f: 0.0 for f in FIELDS}
    ready = sum(1 for p in pods if p.phase == "Running" and p.ready and not p.deleting)
    starting = sum(
        1
        for p in pods
        if not p.deleting and (p.phase == "Pending" or (p.phase == "Running" and not p.ready))
    )
    base.update(
        interval_s=15.0,
        replicas_desired=float(spec_replicas),
        replicas_ready=float(ready),
        replicas_starting=float(starting),
        requests_waiting=float("nan"),
    )
    base[FLEET_FIELD] = fleet_milli / 1000.0
    return IntervalMetrics(**base)


def desired(
    cfg: HPAConfig, spec_replicas: int, pods: Sequence[Pod] = (), fleet_milli: float = float("nan")
) -> int:
    """The replica calculator alone (steps 1-2), on the pod-level view."""
    return (
        HPAPolicy(cfg)
        .decide([interval(spec_replicas, pods, fleet_milli)], pods=pod_samples(pods))
        .replicas
    )


def clamp_once(
    limits: SafetyLimits,
    current: int,
    proposed: int,
    *,
    recommendations: Sequence[tuple[int, float]] | None = (),
    up_events: Sequence[tuple[int, float]] = (),
    down_events: Sequence[tuple[int, float]] = (),
) -> tuple[int, tuple[str, ...]]:
    """One sync's normalisation at t = 0 with the controller's memory: `recommendations` as
    (replicas, age_s); None = the controller has none for this HPA yet, so it records the
    current count first (`recordInitialRecommendation`); events as (replica change, age_s)."""
    entries = [(-age, rec, 0, 0) for rec, age in recommendations or ()]
    entries += [(-age, np.nan, n, 0) for n, age in up_events]
    entries += [(-age, np.nan, 0, n) for n, age in down_events]
    state = ClampState.empty(1, limits, 15.0, initial_recommendation=recommendations is None)
    slots = len(entries) + 2
    state.times_s = np.full(slots, -np.inf)
    state.proposals = np.full((1, slots), np.nan)
    state.added = np.zeros((1, slots))
    state.removed = np.zeros((1, slots))
    for i, (t, rec, added, removed) in enumerate(entries):
        state.times_s[i] = t
        state.proposals[0, i] = rec
        state.added[0, i] = added
        state.removed[0, i] = removed
    state.cursor = len(entries)
    c = clamp(proposed, current, 0.0, limits, state)
    return c.replicas, c.reasons


def reconcile(
    cfg: HPAConfig,
    spec_replicas: int,
    pods: Sequence[Pod] = (),
    fleet_milli: float = float("nan"),
    *,
    recommendations: Sequence[tuple[int, float]] | None = None,
) -> int:
    """One `reconcileAutoscaler`: the policy's proposal on the pod view, then the clamp with the
    manifest's behaviour. `recommendations` None (upstream's default for a test case) seeds the
    current count; [] is a controller that already holds an empty history."""
    proposal = desired(cfg, spec_replicas, pods, fleet_milli)
    return clamp_once(cfg.limits, spec_replicas, proposal, recommendations=recommendations)[0]


def events(changes: Sequence[int], period_s: float) -> list[tuple[int, float]]:
    """`generateEventsUniformDistribution`: events at the centres of equal segments of the last
    `period_s` seconds, oldest first (ages truncated to whole seconds, as time.Duration does)."""
    seg = period_s / len(changes)
    return [(n, float(int(period_s - seg * (i + 1) + seg / 2))) for i, n in enumerate(changes)]
