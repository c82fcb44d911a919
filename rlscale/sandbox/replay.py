"""Replay a workload against the pods that are actually serving in the stand-in API.

Every step (a quarter second of wall time by default) takes the arrivals of the elapsed simulated
time from the `Workload` (looping at its end), counts the Deployment's Ready, non-terminating
pods, advances the serving model by that much time with that many replicas, and splits the
cluster totals evenly over those pods' metrics. A scale-up therefore helps only once the new pods
have finished their cold start, as in a cluster.

A pod that stops serving (it is terminating) leaves with its share of the queue and the batch
(`ServingModel.release`) and drains them on its own (`PodMetrics.drain`), still scraped until it
is removed; what it has not finished by then dies with it. So a deleted pod's series fall and end
inside the next rate window while the pods that stay keep theirs, as in a cluster; a fleet model
without `release` hands the deleted pod's requests to the others instead.

The serving model is `rlscale.serving.model.ServingModel` (anything with the same `step`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rlscale.profiles.model import ServiceProfile
from rlscale.sandbox.apiserver.resources import DEPLOYMENTS
from rlscale.sandbox.apiserver.store import Store
from rlscale.sandbox.kubelet import ClusterController, SimClock, is_terminating, serving
from rlscale.sandbox.pods import PodFleet
from rlscale.traces.workload import Workload


class ServingModelLike(Protocol):
    def step(
        self,
        ready_replicas: int,
        arrivals: float,
        prompt_tokens: float,
        output_tokens: float,
        dt_s: float,
    ) -> Any: ...


def default_serving_model(profile: ServiceProfile) -> ServingModelLike:
    from rlscale.serving.model import ServingModel

    return ServingModel(profile)


def constant_workload(
    rate_rps: float,
    *,
    prompt_tokens: float = 1024.0,
    output_tokens: float = 256.0,
    duration_s: float = 3600.0,
    interval_s: float = 60.0,
    name: str = "constant",
) -> Workload:
    n = max(1, int(round(duration_s / interval_s)))
    return Workload(
        name=name,
        source=f"constant {rate_rps} req/s",
        interval_s=interval_s,
        arrivals=np.full(n, rate_rps * interval_s),
        prompt_tokens=np.full(n, float(prompt_tokens)),
        output_tokens=np.full(n, float(output_tokens)),
    )


def replicas_for(
    workload: Workload, profile: ServiceProfile, *, horizon_s: float = 600.0, load: float = 0.7
) -> int:
    """Replicas that serve the busiest minute of the workload's first `horizon_s` at `load` of
    their SLO capacity (at least 1): the fleet a sandbox starts with, so the workload does not
    overload it before an autoscaler has had a chance to act."""
    from rlscale.serving.capacity import slo_capacity_rps

    bins = max(1, int(math.ceil(horizon_s / workload.interval_s)))
    arrivals = workload.arrivals[:bins]
    per_minute = max(1, int(round(60.0 / workload.interval_s)))
    busiest = max(
        float(arrivals[i : i + per_minute].sum())
        / (min(per_minute, len(arrivals) - i) * workload.interval_s)
        for i in range(0, len(arrivals), per_minute)
    )
    total = float(arrivals.sum())
    weights = arrivals / total if total > 0 else np.full(len(arrivals), 1.0 / len(arrivals))
    capacity = slo_capacity_rps(
        profile,
        float(np.dot(weights, workload.prompt_tokens[:bins])),
        float(np.dot(weights, workload.output_tokens[:bins])),
    )
    if not capacity > 0:
        return 1
    return max(1, int(math.ceil(busiest / (load * capacity))))


class WorkloadCursor:
    """Arrivals and mean request sizes between two simulated times, the workload repeating
    after its end (`loop=True`) or silent after it."""

    def __init__(self, workload: Workload, *, loop: bool = True, offset_s: float = 0.0) -> None:
        self.w = workload
        self.loop = loop
        self.offset_s = offset_s
        zero = np.zeros(1)
        self._cum_arr = np.concatenate([zero, np.cumsum(workload.arrivals)])
        self._cum_prompt = np.concatenate(
            [zero, np.cumsum(workload.arrivals * workload.prompt_tokens)]
        )
        self._cum_output = np.concatenate(
            [zero, np.cumsum(workload.arrivals * workload.output_tokens)]
        )

    def _cum(self, cum: np.ndarray, t: float) -> float:
        w = self.w
        t = max(t + self.offset_s, 0.0)
        laps, rest = divmod(t, w.duration_s)
        if not self.loop and laps >= 1:
            return float(cum[-1])
        k = min(int(rest // w.interval_s), w.n_bins - 1)
        frac = (rest - k * w.interval_s) / w.interval_s
        return float(laps * cum[-1] + cum[k] + frac * (cum[k + 1] - cum[k]))

    def _bin(self, t: float) -> int:
        rest = max(t + self.offset_s, 0.0) % self.w.duration_s
        return min(int(rest // self.w.interval_s), self.w.n_bins - 1)

    def take(self, t0_s: float, t1_s: float) -> tuple[float, float, float]:
        """(arrivals, mean prompt tokens, mean output tokens) in [t0_s, t1_s)."""
        arrivals = self._cum(self._cum_arr, t1_s) - self._cum(self._cum_arr, t0_s)
        if arrivals > 1e-12:
            prompt = (
                self._cum(self._cum_prompt, t1_s) - self._cum(self._cum_prompt, t0_s)
            ) / arrivals
            output = (
                self._cum(self._cum_output, t1_s) - self._cum(self._cum_output, t0_s)
            ) / arrivals
        else:
            k = self._bin(t0_s)
            prompt, output = float(self.w.prompt_tokens[k]), float(self.w.output_tokens[k])
        return max(arrivals, 0.0), prompt, output


@dataclass
class ReplayStep:
    time_s: float
    dt_s: float
    ready_replicas: int
    arrivals: float
    snapshot: Any


class Replay:
    def __init__(
        self,
        store: Store,
        fleet: PodFleet,
        controller: ClusterController,
        workload: Workload,
        model: ServingModelLike,
        clock: SimClock,
        *,
        namespace: str,
        deployment: str,
        loop_workload: bool = True,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.controller = controller
        self.cursor = WorkloadCursor(workload, loop=loop_workload)
        self.model = model
        self.clock = clock
        self.namespace = namespace
        self.deployment = deployment
        self._last_s = clock.now_s()
        self.last: ReplayStep | None = None
        self._serving: set[str] = set()  # pods that served at the last step
        self.on_step: list[Callable[[ReplayStep], None]] = []

    def step(self) -> ReplayStep | None:
        """Advance the serving model to `clock.now_s()`; None if no time has passed."""
        now = self.clock.now_s()
        dt = now - self._last_s
        if dt <= 0:
            return None
        t0, self._last_s = self._last_s, now
        d = self.store.find(DEPLOYMENTS, self.namespace, self.deployment)
        pods = self.controller.owned_pods(d) if d is not None else []
        ready = [p for p in pods if serving(p)]
        all_metrics = [self.fleet.metrics_of(self.namespace, p["metadata"]["name"]) for p in ready]
        metrics = [m for m in all_metrics if m]
        names = {p["metadata"]["name"] for p, m in zip(ready, all_metrics, strict=True) if m}
        release = getattr(self.model, "release", None)
        if release is not None and self._serving:
            # A pod that stopped serving since the last step takes its share of the queue and of
            # the batch with it (it drains them, `PodMetrics.drain`); they do not move to the pods
            # that stay. Load is not even across pods in a cluster either.
            gone = len(self._serving - names)
            if gone:
                release(gone / len(self._serving))
        self._serving = names
        arrivals, prompt, output = self.cursor.take(t0, now)
        snap = self.model.step(len(metrics), arrivals, prompt, output, dt)
        for m in metrics:
            m.apply(snap, 1.0 / len(metrics), output, dt)
        for p in pods:
            if is_terminating(p):
                draining = self.fleet.metrics_of(self.namespace, p["metadata"]["name"])
                if draining is not None:
                    if release is not None:
                        draining.drain(dt)
                    else:
                        draining.idle()
        self.last = ReplayStep(now, dt, len(metrics), arrivals, snap)
        for callback in self.on_step:
            callback(self.last)
        return self.last

    async def run(self, stop: asyncio.Event, period_real_s: float = 0.25) -> None:
        while not stop.is_set():
            await self.fleet.sync()
            self.step()
            try:
                await asyncio.wait_for(stop.wait(), timeout=period_real_s)
            except TimeoutError:
                pass
