"""Cold-start stages of a service from its pods as the Kubernetes API reports them, fitted into a
`ServiceProfile`'s `cold_start` (with the sources and the fit error).

From each pod that reached Ready (`kubectl get pods -o json`; a node object where there is one):

| stage               | from -> to                                                              |
|---------------------|-------------------------------------------------------------------------|
| `node_provisioning` | pod created -> its node Ready; only for pods whose node was created after the pod (a node the autoscaler brought up for it); `probability` = the share of such pods |
| `scheduling`        | pod created (or, after a new node, the node Ready) -> `PodScheduled` True |
| `container_start`   | scheduled -> the last container's `state.running.startedAt` (image pull, container create) |
| `engine_ready`      | containers started -> `Ready` True (weights load, engine start, warm-up, readiness probe) |

Left out, and counted in the sources: pods not Ready yet, pods that are terminating, pods whose
containers restarted (their Ready time is the last restart's), pods missing a timestamp.

Each stage is a triangular distribution (low, mode, high): the smallest and largest observed
duration and the mode that gives the observed mean (mode = 3 x mean - low - high, clipped to
[low, high]; then the stage's mean moves). The fit error is the Kolmogorov-Smirnov distance
between the observed created -> Ready times and the fitted stages' sum (20,000 seeded draws,
put on the same whole-second stamps as the observations), with both means.

Resolution: Kubernetes writes these timestamps in whole seconds, so each stage is +-1 s; a
`Ready` condition that flapped after the start shows its last transition (a later time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from rlscale.config import validate_model
from rlscale.profiles.model import ServiceProfile, Stage

Obj = Mapping[str, Any]
STAGES = ("node_provisioning", "scheduling", "container_start", "engine_ready")
FIT_DRAWS = 20_000


def parse_k8s_time(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp as the API writes it (`2026-12-03T07:00:00Z`)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class PodTimes:
    """One pod's cold start in Unix seconds; `node_ready_s` only when its node was new."""

    name: str
    created_s: float
    scheduled_s: float
    started_s: float
    ready_s: float
    node_ready_s: float | None = None

    @property
    def total_s(self) -> float:
        return self.ready_s - self.created_s

    def stages(self) -> dict[str, float]:
        """Duration of each stage this pod went through (clipped at 0: whole-second stamps)."""
        out = {}
        after_node = self.created_s
        if self.node_ready_s is not None:
            out["node_provisioning"] = max(self.node_ready_s - self.created_s, 0.0)
            after_node = max(self.node_ready_s, self.created_s)
        out["scheduling"] = max(self.scheduled_s - after_node, 0.0)
        out["container_start"] = max(self.started_s - self.scheduled_s, 0.0)
        out["engine_ready"] = max(self.ready_s - self.started_s, 0.0)
        return out


def _condition_time(obj: Obj, type_: str) -> float | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return parse_k8s_time(c.get("lastTransitionTime"))
    return None


def pod_times(pod: Obj, nodes: Mapping[str, Obj] | None = None) -> PodTimes | str:
    """The pod's `PodTimes`, or why it is left out (one word: the key of the skip count)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "terminating"
    containers = status.get("containerStatuses") or []
    if any(int(c.get("restartCount") or 0) > 0 for c in containers):
        return "restarted"
    ready = _condition_time(pod, "Ready")
    if ready is None:
        return "not_ready"
    created = parse_k8s_time(meta.get("creationTimestamp"))
    scheduled = _condition_time(pod, "PodScheduled")
    started = [
        parse_k8s_time(((c.get("state") or {}).get("running") or {}).get("startedAt"))
        for c in containers
    ]
    if created is None or scheduled is None or not started or any(s is None for s in started):
        return "missing_timestamp"
    node_ready = None
    node = (nodes or {}).get(str((pod.get("spec") or {}).get("nodeName") or ""))
    if node is not None:
        node_created = parse_k8s_time((node.get("metadata") or {}).get("creationTimestamp"))
        if node_created is not None and node_created > created:
            node_ready = _condition_time(node, "Ready") or node_created
    return PodTimes(
        name=str(meta.get("name", "?")),
        created_s=created,
        scheduled_s=scheduled,
        started_s=max(s for s in started if s is not None),
        ready_s=ready,
        node_ready_s=node_ready,
    )


@dataclass(frozen=True)
class ColdStartFit:
    """The fitted stages, the pods they came from, and how well their sum fits."""

    stages: list[Stage]
    pods: list[PodTimes]
    skipped: dict[str, int]
    ks_distance: float
    observed_mean_s: float
    fitted_mean_s: float
    observed_stage_means_s: dict[str, float] = field(default_factory=dict)

    def error_text(self) -> str:
        return (
            f"KS distance {self.ks_distance:.3f} between the {len(self.pods)} observed "
            f"created->Ready times and the fitted stages ({FIT_DRAWS:,} draws); mean "
            f"{self.observed_mean_s:.1f} s observed, {self.fitted_mean_s:.1f} s fitted"
        )


def triangular(name: str, durations_s: np.ndarray, probability: float = 1.0) -> Stage:
    """(min, mode matching the mean, max) of the observed durations."""
    x = np.asarray(durations_s, dtype=float)
    low, high = float(x.min()), float(x.max())
    mode = float(np.clip(3.0 * x.mean() - low - high, low, high))
    return Stage(
        name=name,
        low_s=round(low, 3),
        mode_s=round(mode, 3),
        high_s=round(high, 3),
        probability=round(probability, 4),
    )


def fit_cold_start(
    pods: Iterable[Obj], nodes: Mapping[str, Obj] | None = None, *, seed: int = 0
) -> ColdStartFit:
    """Stages from the pods that reached Ready (see the module docstring); ValueError if none."""
    times: list[PodTimes] = []
    skipped: dict[str, int] = {}
    for pod in pods:
        t = pod_times(pod, nodes)
        if isinstance(t, str):
            skipped[t] = skipped.get(t, 0) + 1
        else:
            times.append(t)
    if not times:
        shown = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "no pods"
        raise ValueError(f"no pod reached Ready with all its timestamps ({shown})")
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    for t in times:
        for name, d in t.stages().items():
            per_stage[name].append(d)
    stages = [
        triangular(name, np.array(d), probability=len(d) / len(times))
        for name, d in per_stage.items()
        if d
    ]
    observed = np.array([t.total_s for t in times])
    draft = ServiceProfile.model_construct(cold_start=stages)
    rng = np.random.default_rng(seed)
    draws = ServiceProfile.sample_cold_start_s(draft, rng, FIT_DRAWS)
    if np.allclose(observed, np.round(observed)):
        # whole-second stamps: an observed duration is floor(u + x), u the creation's fraction
        # of a second; compare like with like, or the steps of the observed CDF are the error
        draws = np.floor(rng.random(FIT_DRAWS) + draws)
    return ColdStartFit(
        stages=stages,
        pods=times,
        skipped=skipped,
        ks_distance=ks_distance(observed, draws),
        observed_mean_s=float(observed.mean()),
        fitted_mean_s=float(sum(s.mean_s for s in stages)),
        observed_stage_means_s={
            k: float(np.sum(v) / len(times)) for k, v in per_stage.items() if v
        },
    )


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """sup |F_a - F_b| of two samples' empirical CDFs."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def with_cold_start(profile: ServiceProfile, fit: ColdStartFit, source: str) -> ServiceProfile:
    """`profile` with the fitted `cold_start`, validated, and its sources saying where from."""
    first = min(t.created_s for t in fit.pods)
    last = max(t.created_s for t in fit.pods)
    skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(fit.skipped.items()))
    # the base profile's notes on its own cold-start stages no longer apply
    sources = {k: v for k, v in profile.sources.items() if not k.startswith("cold_start")}
    sources["cold_start"] = (
        f"{len(fit.pods)} pods from {source}, created {_iso(first)}..{_iso(last)}"
        + (f" (left out: {skipped})" if skipped else "")
        + "; pod conditions and container start times, whole-second timestamps (+-1 s a stage)"
    )
    sources["cold_start_fit_error"] = fit.error_text()
    data = profile.model_dump()
    data["cold_start"] = [s.model_dump() for s in fit.stages]
    data["sources"] = sources
    return validate_model(data, ServiceProfile, where=f"cold-start profile from {source}")


def pods_of(doc: Any) -> list[Obj]:
    """The pods of a `kubectl get pods -o json` answer (a List), one pod, or a list of pods."""
    if isinstance(doc, list):
        return [p for p in doc if isinstance(p, dict)]
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        return [p for p in doc["items"] if isinstance(p, dict)]
    if isinstance(doc, dict) and doc.get("kind") == "Pod":
        return [doc]
    return []


def _iso(t_s: float) -> str:
    from datetime import UTC

    if not math.isfinite(t_s):
        return "?"
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_cold_start_scale(profile: ServiceProfile, factor: float) -> ServiceProfile:
    """`profile` with every cold-start stage's bounds x `factor` (slower nodes or image pulls:
    the cold-start shift of the issue 13 matrix)."""
    if factor == 1.0:
        return profile
    stages = [
        s.model_copy(update={k: getattr(s, k) * factor for k in ("low_s", "mode_s", "high_s")})
        for s in profile.cold_start
    ]
    return profile.model_copy(update={"cold_start": stages})
