"""The simulated deployment controller and kubelet of the sandbox.

Deployment controller (with the ReplicaSet controller folded in): keeps the number of live
(non-terminating) pods of each Deployment at `spec.replicas`; on scale-down it deletes pods in the
ReplicaSet controller's order — not-ready before ready, the lower `pod-deletion-cost` annotation,
then the newest first — and it writes the Deployment's `status` (`replicas`, `readyReplicas`,
`availableReplicas`, `updatedReplicas`, `unavailableReplicas`, `observedGeneration`,
conditions) and a `ScalingReplicaSet` Event. Pods are
named `<deployment>-<hash>-<5 chars>` and owned by a ReplicaSet that is not itself served. A
change of the pod template is not rolled out (only replicas matter here).

Kubelet: a new pod is Pending (ContainerCreating) for `pending_share` of its cold start, then
Running but not Ready (loading weights, compiling, warming up), then Ready once the whole cold
start has passed. Cold starts are drawn from the `ServiceProfile` (`sample_cold_start_s`) with a
seeded RNG, in simulated seconds. A pod with a `deletionTimestamp` turns not-Ready at once
(endpoints drop it) and is removed when its grace period has passed in simulated time.

Sleep mode (vLLM `--enable-sleep-mode`): the pod's server (`pods.py`) calls `sleep_pod` /
`wake_pod`. A sleeping pod turns not Ready at once and stays so until its wake is done: a draw
from the profile's `warm_wake` stage (own seeded stream), in simulated seconds. This is the
readiness probe a sleep-mode deployment must set (not ready while `/is_sleeping` is true;
vLLM's /health stays 200 while asleep), without its probe period: Ready flips at the next tick.
The container keeps running and the pod keeps its GPUs; being not Ready, a sleeping pod is
deleted before the Ready ones on a scale-down, as the ReplicaSet controller would.

Nodes: by default every pod binds at once to the one `sandbox-node` and its cold start is the
profile's whole draw (the node stage included, as a probability). With `nodes=NodePool(...)`
(`nodes.py`) pods wait unbound for a node with free GPUs, preempt lower-priority placeholder
pods, trigger an emulated cluster-autoscaler, and start with what their node has cached; the
kubelet part is the same from the binding on.

Time: everything runs on a `SimClock` in simulated seconds. `ScaledClock(time_scale=60)` runs a
60 s cold start in 1 s of wall time; `ManualClock` lets tests step time by hand and call
`tick()` directly. Object timestamps (`creationTimestamp`, ...) stay wall-clock, as kubectl
shows them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from rlscale.profiles.model import ServiceProfile
from rlscale.sandbox.apiserver.resources import DEPLOYMENTS, EVENTS, NODES, PODS, Obj
from rlscale.sandbox.apiserver.store import ChangeEvent, Store, rfc3339
from rlscale.sandbox.loop import wait_any
from rlscale.sandbox.nodes import PAUSE_EXIT_S, NodeFleet, NodePool, is_pause

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NODE_NAME = "sandbox-node"
POD_IP = "127.0.0.1"


class SimClock(Protocol):
    def now_s(self) -> float:
        """Simulated seconds since the sandbox started."""
        ...

    def real_delay_s(self, sim_s: float) -> float:
        """Wall-clock seconds that `sim_s` simulated seconds take."""
        ...


class ScaledClock:
    """Simulated time = wall time since start x `time_scale` (60: one minute per second)."""

    def __init__(
        self, time_scale: float = 1.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale = {time_scale}, must be > 0")
        self.time_scale = float(time_scale)
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now_s(self) -> float:
        return (self._monotonic() - self._t0) * self.time_scale

    def real_delay_s(self, sim_s: float) -> float:
        return max(sim_s, 0.0) / self.time_scale


class ManualClock:
    """A clock the test moves: `advance(30)` is 30 simulated seconds later."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = float(start_s)

    def now_s(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds

    def real_delay_s(self, sim_s: float) -> float:
        return 0.0


@dataclass
class PodTimeline:
    created_s: float
    cold_start_s: float
    running_at_s: float
    ready_at_s: float
    delete_at_s: float | None = None
    node: str | None = None  # with a node pool: where it is bound (None: not yet)
    # vLLM sleep mode: asleep from `/sleep` until a `/wake_up` has taken `wake_s` (awake_at_s)
    asleep: bool = False
    wake_s: float | None = None  # the latest wake's draw, simulated seconds
    awake_at_s: float | None = None  # a wake in progress finishes then


class EngineUnavailable(Exception):
    """The pod's engine cannot sleep or wake now (gone, not started, terminating): the pod's
    server answers 503."""


def template_hash(deployment: Obj) -> str:
    """A stable 10-character pod-template-hash (from the uid: the template is never rolled)."""
    digest = hashlib.sha256(deployment["metadata"]["uid"].encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def replicaset_name(deployment: Obj) -> str:
    return f"{deployment['metadata']['name']}-{template_hash(deployment)}"


def _owner_rs(pod: Obj) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("controller"):
            return ref.get("name")
    return None


def is_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def is_terminating(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def serving(pod: Obj) -> bool:
    """Ready and not terminating: the pods a Service would send requests to."""
    return is_ready(pod) and not is_terminating(pod)


def _now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


class ClusterController:
    """Reconciles Deployments to pods and moves pods through their lifecycle; see the module doc.

    `reserve_port` (optional) is called once per new pod and returns the loopback port its
    server (OpenAI API, /metrics, sleep mode) will listen on; the port goes into the pod's first
    container as the port named `port_name` (default `http`, replacing the template's) and into
    the `prometheus.io/port` annotation.

    Sleep mode (`sleep_pod`, `wake_pod`, `finish_wake`, `is_sleeping`) is the engine state the
    pod's server acts on (`pods.PodFleet`); the kubelet turns it into the Ready condition, as the
    readiness probe a sleep-mode deployment needs would (not ready while `/is_sleeping` is true).
    """

    def __init__(
        self,
        store: Store,
        profile: ServiceProfile,
        clock: SimClock,
        *,
        seed: int = 0,
        pending_share: float = 0.5,
        reserve_port: Callable[[], int] | None = None,
        emit_events: bool = True,
        port_name: str = "http",
        nodes: NodePool | None = None,
    ) -> None:
        if not 0.0 <= pending_share <= 1.0:
            raise ValueError(f"pending_share = {pending_share}, must be within [0, 1]")
        self.store = store
        self.profile = profile
        self.clock = clock
        self.pending_share = pending_share
        self.reserve_port = reserve_port
        self.emit_events = emit_events
        self.port_name = port_name
        self.timelines: dict[str, PodTimeline] = {}  # by pod uid
        self._rng = np.random.default_rng(seed)
        # wakes draw from their own stream, so a test that wakes pods leaves cold starts as they are
        self._wake_rng = np.random.default_rng([seed, 1])
        # opt-in GPU nodes, scheduler and cluster-autoscaler (nodes.py); None: one node, no waits
        self.node_fleet = (
            NodeFleet(nodes, profile, seed=seed, now_s=clock.now_s()) if nodes else None
        )
        self._order = 0

    # one pass ----------------------------------------------------------------------------
    def tick(self) -> float | None:
        """Reconcile once at `clock.now_s()`. Returns the simulated seconds until the next
        scheduled transition (None if nothing is pending)."""
        now = self.clock.now_s()
        deployments = self.store.list(DEPLOYMENTS)
        owners = {(d["metadata"]["namespace"], replicaset_name(d)): d for d in deployments}
        for d in deployments:
            self._reconcile_deployment(d, now)
        pods = self.store.list(PODS)
        for pod in pods:
            rs = _owner_rs(pod)
            if rs is not None and "pod-template-hash" in (pod["metadata"].get("labels") or {}):
                if (pod["metadata"]["namespace"], rs) not in owners and not is_terminating(pod):
                    # Garbage collection: the owning Deployment is gone.
                    self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if self.node_fleet is not None:
            self._schedule_on_nodes(now)
        for pod in self.store.list(PODS):
            self._kubelet(pod, now)
        for d in self.store.list(DEPLOYMENTS):
            self._write_status(d)
        live = {p["metadata"]["uid"] for p in self.store.list(PODS)}
        for uid in list(self.timelines):
            if uid not in live:
                del self.timelines[uid]
        return self._next_due(now)

    def _next_due(self, now: float) -> float | None:
        due = []
        for t in self.timelines.values():
            for at in (t.running_at_s, t.ready_at_s, t.delete_at_s, t.awake_at_s):
                if at is not None and now < at < math.inf:  # inf: not bound to a node yet
                    due.append(at - now)
        if self.node_fleet is not None:
            node_due = self.node_fleet.next_due_s(now)
            if node_due is not None:
                due.append(node_due)
        return min(due) if due else None

    # deployment controller ---------------------------------------------------------------
    def owned_pods(self, deployment: Obj) -> list[Obj]:
        ns = deployment["metadata"]["namespace"]
        rs = replicaset_name(deployment)
        return [p for p in self.store.list(PODS, ns) if _owner_rs(p) == rs]

    def _reconcile_deployment(self, d: Obj, now: float) -> None:
        pods = self.owned_pods(d)
        live = [p for p in pods if not is_terminating(p)]
        want = int(d["spec"].get("replicas", 0))
        if want > len(live):
            for _ in range(want - len(live)):
                self._create_pod(d, now)
            self._event(d, f"Scaled up replica set {replicaset_name(d)} to {want} from {len(live)}")
        elif want < len(live):
            victims = sorted(live, key=self._deletion_rank)[: len(live) - want]
            for pod in victims:
                self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
            self._event(
                d, f"Scaled down replica set {replicaset_name(d)} to {want} from {len(live)}"
            )

    def _deletion_rank(self, pod: Obj) -> tuple[Any, ...]:
        # ReplicaSet controller order (controller_utils.ActivePods): unready before ready,
        # pending before running, the lower `controller.kubernetes.io/pod-deletion-cost` first,
        # then the newest first.
        t = self.timelines.get(pod["metadata"]["uid"])
        created = t.created_s if t else -math.inf
        phase_rank = 0 if (pod.get("status") or {}).get("phase") == "Pending" else 1
        return (
            is_ready(pod),
            phase_rank,
            _deletion_cost(pod),
            -created,
            pod["metadata"]["creationTimestamp"],
            pod["metadata"]["name"],
        )

    def _create_pod(self, d: Obj, now: float) -> Obj:
        ns = d["metadata"]["namespace"]
        template = d["spec"].get("template") or {}
        tmeta = template.get("metadata") or {}
        rs = replicaset_name(d)
        labels = {**(tmeta.get("labels") or {}), "pod-template-hash": template_hash(d)}
        annotations = dict(tmeta.get("annotations") or {})
        spec = _copy(template.get("spec") or {})
        if self.node_fleet is None:
            spec["nodeName"] = NODE_NAME
        else:
            spec["priority"] = self.node_fleet.priority({"spec": spec})  # admission's lookup
        if self.reserve_port is not None and not is_pause(spec):  # a pause pod serves nothing
            port = self.reserve_port()
            annotations.update(
                {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics",
                }
            )
            containers = spec.get("containers") or []
            if containers:
                # vLLM serves the API, /metrics and the sleep endpoints on one port
                ports = [
                    p for p in containers[0].get("ports") or [] if p.get("name") != self.port_name
                ]
                containers[0]["ports"] = [
                    {"name": self.port_name, "containerPort": port, "protocol": "TCP"},
                    *ports,
                ]
        containers = spec.get("containers") or []
        pod = {
            "metadata": {
                "generateName": f"{rs}-",
                "namespace": ns,
                "labels": labels,
                **({"annotations": annotations} if annotations else {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": rs,
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{d['metadata']['uid']}/{rs}")),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
            "status": (
                _bound_status(containers)
                if self.node_fleet is None
                else {"phase": "Pending", "conditions": []}
            ),
        }
        created = self.store.create(PODS, ns, pod)
        self._schedule(created, now)
        return created

    def _schedule(self, pod: Obj, now: float) -> PodTimeline:
        if self.node_fleet is not None and not (pod.get("spec") or {}).get("nodeName"):
            # waits for the scheduler (`_schedule_on_nodes`), which sets its times at binding
            self._order += 1
            t = PodTimeline(now + self._order * 1e-9, math.nan, math.inf, math.inf)
            self.timelines[pod["metadata"]["uid"]] = t
            return t
        cold = float(self.profile.sample_cold_start_s(self._rng, 1)[0])
        self._order += 1
        # created_s breaks ties between pods created in the same tick by creation order.
        t = PodTimeline(
            created_s=now + self._order * 1e-9,
            cold_start_s=cold,
            running_at_s=now + self.pending_share * cold,
            ready_at_s=now + cold,
        )
        self.timelines[pod["metadata"]["uid"]] = t
        return t

    def _event(
        self,
        obj: Obj,
        message: str,
        *,
        reason: str = "ScalingReplicaSet",
        component: str = "deployment-controller",
        kind: str = "Deployment",
        type_: str = "Normal",
    ) -> None:
        if not self.emit_events:
            return
        meta = obj["metadata"]
        now = _now_rfc3339()
        self.store.create(
            EVENTS,
            meta["namespace"],
            {
                "metadata": {"name": f"{meta['name']}.{time.time_ns():x}"},
                "involvedObject": {
                    "apiVersion": "apps/v1" if kind == "Deployment" else "v1",
                    "kind": kind,
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    "resourceVersion": meta["resourceVersion"],
                },
                "reason": reason,
                "message": message,
                "source": {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": type_,
                "reportingComponent": component,
                "reportingInstance": "",
            },
        )

    # scheduler and cluster-autoscaler (with a node pool) -----------------------------------
    def _schedule_on_nodes(self, now: float) -> None:
        assert self.node_fleet is not None
        fleet = self.node_fleet
        created = {uid: t.created_s for uid, t in self.timelines.items()}
        decision = fleet.tick(now, self.store.list(PODS), created)
        for victim, by, node in decision.preemptions:
            vm = victim["metadata"]
            self.store.delete(PODS, vm["namespace"], vm["name"])
            self._event(
                victim,
                f"Preempted by pod {by['metadata']['uid']} on node {node}",
                reason="Preempted",
                component="default-scheduler",
                kind="Pod",
            )
        for pod, node in decision.nominated:
            if (pod.get("status") or {}).get("nominatedNodeName") == node:
                continue  # each write wakes the loop: write only what changes
            self.store.mutate(
                PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], _nominate(node)
            )
        for pod, message in decision.unschedulable:
            meta = pod["metadata"]
            if _condition_message(pod, "PodScheduled") == message:
                continue
            if _condition_reason(pod, "PodScheduled") != "Unschedulable":
                self._event(
                    pod,
                    message,
                    reason="FailedScheduling",
                    component="default-scheduler",
                    kind="Pod",
                    type_="Warning",
                )
            self.store.mutate(PODS, meta["namespace"], meta["name"], _unschedulable(message))
        for pod, node in decision.scale_ups:
            self._event(
                pod,
                f"pod triggered scale-up: [{{sandbox-gpu-pool -> {len(fleet.nodes)} "
                f"(max: {fleet.pool.max_nodes})}}] ({node})",
                reason="TriggeredScaleUp",
                component="cluster-autoscaler",
                kind="Pod",
            )
        self._sync_nodes(now)
        for pod, node in decision.binds:
            meta = pod["metadata"]
            # the binding subresource sets spec.nodeName (a write of the pod here), the kubelet
            # then the status
            self.store.mutate(
                PODS, meta["namespace"], meta["name"], _bind_spec(node), subresource=None
            )
            self.store.mutate(PODS, meta["namespace"], meta["name"], _bind_status)
            t = self.timelines.get(meta["uid"]) or self._schedule(pod, now)
            if fleet.image == "" and not is_pause(pod["spec"]):
                fleet.image = str(pod["spec"]["containers"][0].get("image", ""))
            cold = fleet.start_s(node, pod["spec"])
            t.node, t.cold_start_s = node, cold
            t.running_at_s = now + self.pending_share * cold
            t.ready_at_s = now + cold

    def _write_status(self, d: Obj) -> None:
        pods = [p for p in self.owned_pods(d) if not is_terminating(p)]
        want = int(d["spec"].get("replicas", 0))
        ready = sum(1 for p in pods if is_ready(p))
        max_unavailable = _max_unavailable(d, want)
        available_ok = ready >= want - max_unavailable
        old = d.get("status") or {}
        conditions = {c.get("type"): c for c in old.get("conditions") or []}
        now = _now_rfc3339()

        def condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
            prev = conditions.get(type_)
            if prev and prev.get("status") == status and prev.get("reason") == reason:
                return prev
            return {
                "type": type_,
                "status": status,
                "lastUpdateTime": now,
                "lastTransitionTime": now
                if not prev or prev.get("status") != status
                else prev.get("lastTransitionTime", now),
                "reason": reason,
                "message": message,
            }

        status: dict[str, Any] = {"observedGeneration": d["metadata"].get("generation", 1)}
        counts = {
            "replicas": len(pods),
            "updatedReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(want - ready, 0),
        }
        status.update({k: v for k, v in counts.items() if v})  # omitempty, as the apiserver encodes
        status["conditions"] = [
            condition(
                "Available",
                "True" if available_ok else "False",
                "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available_ok
                else "Deployment does not have minimum availability.",
            ),
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable" if ready >= want else "ReplicaSetUpdated",
                f'ReplicaSet "{replicaset_name(d)}" '
                + ("has successfully progressed." if ready >= want else "is progressing."),
            ),
        ]
        if status != old:

            def put(obj: Obj) -> None:
                obj["status"] = status

            self.store.mutate(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"], put)

    def _sync_nodes(self, now: float) -> None:
        """Mirror the pool's nodes into the API as Node objects (created when the autoscaler
        asks for one, Ready once booted, deleted when scaled down); writes only what changed."""
        assert self.node_fleet is not None
        present = {n["metadata"]["name"]: n for n in self.store.list(NODES)}
        for name in present.keys() - self.node_fleet.nodes.keys():
            self.store.remove(NODES, "", name)
        for name in self.node_fleet.nodes:
            want = self.node_fleet.node_object(name, now)
            cur = present.get(name)
            if cur is None:
                self.store.create(NODES, None, want)
                continue
            if (cur["metadata"].get("annotations") or {}) != want["metadata"]["annotations"]:

                def annotate(obj: Obj, a: dict[str, str] = want["metadata"]["annotations"]) -> None:
                    obj["metadata"]["annotations"] = a

                self.store.mutate(NODES, "", name, annotate, subresource=None)
            if _node_state(cur) != _node_state(want):

                def put(obj: Obj, status: Obj = want["status"]) -> None:
                    obj["status"] = status

                self.store.mutate(NODES, "", name, put)

    # kubelet -----------------------------------------------------------------------------
    def _kubelet(self, pod: Obj, now: float) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        t = self.timelines.get(uid)
        if t is None:
            # A pod this controller did not create (e.g. POSTed by a test): start it now.
            t = self._schedule(pod, now)
        if is_terminating(pod):
            if t.delete_at_s is None:
                grace = float(meta.get("deletionGracePeriodSeconds", 30))
                if is_pause(pod.get("spec") or {}):
                    grace = min(grace, PAUSE_EXIT_S)  # pause exits on SIGTERM at once
                t.delete_at_s = now + grace
                if is_ready(pod):
                    self.store.mutate(PODS, ns, name, _set_not_ready)
            if now >= t.delete_at_s:
                self.store.remove(PODS, ns, name)
            return
        phase = (pod.get("status") or {}).get("phase")
        if t.asleep:
            if t.awake_at_s is not None and now >= t.awake_at_s:
                t.asleep, t.awake_at_s = False, None
                self.store.mutate(PODS, ns, name, _set_ready)
            elif is_ready(pod):
                self.store.mutate(PODS, ns, name, _set_not_ready)
        elif now >= t.ready_at_s and not is_ready(pod):
            self.store.mutate(PODS, ns, name, _set_ready)
        elif now >= t.running_at_s and phase == "Pending":
            self.store.mutate(PODS, ns, name, _set_running)
            if self.node_fleet is not None and t.node is not None:
                image = str(((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", ""))
                self.node_fleet.cache_image(t.node, image)  # pulled: the node keeps it

    # sleep mode --------------------------------------------------------------------------
    def _engine(self, namespace: str, name: str) -> tuple[Obj, PodTimeline]:
        """The pod and its timeline if its engine is up (started, not terminating)."""
        pod = self.store.find(PODS, namespace, name)
        t = self.timelines.get(pod["metadata"]["uid"]) if pod is not None else None
        if pod is None or t is None:
            raise EngineUnavailable(f"pod {namespace}/{name} is not running here")
        if is_terminating(pod):
            raise EngineUnavailable(f"pod {namespace}/{name} is terminating")
        if self.clock.now_s() < t.ready_at_s or (pod.get("status") or {}).get("phase") != "Running":
            raise EngineUnavailable(f"pod {namespace}/{name}: the engine is still starting")
        return pod, t

    def sleep_pod(self, namespace: str, name: str) -> None:
        """Put the engine to sleep (idempotent): not Ready at once, so it leaves the Service.
        A wake in progress is called off (the engine stays asleep). EngineUnavailable if the
        pod is gone, still starting or terminating."""
        pod, t = self._engine(namespace, name)
        t.asleep, t.awake_at_s = True, None
        if is_ready(pod):
            self.store.mutate(PODS, namespace, name, _set_not_ready)

    def wake_pod(self, namespace: str, name: str) -> float:
        """Start a wake and return the simulated time it is done at: now + a draw from the
        profile's `warm_wake`; a wake already in progress is joined, an awake engine is done
        now. EngineUnavailable as `sleep_pod`."""
        _pod, t = self._engine(namespace, name)
        now = self.clock.now_s()
        if not t.asleep:
            return now
        if t.awake_at_s is None:
            t.wake_s = float(self.profile.sample_wake_s(self._wake_rng, 1)[0])
            t.awake_at_s = now + t.wake_s
        return t.awake_at_s

    def finish_wake(self, namespace: str, name: str) -> bool:
        """Turn the pod Ready if its wake is done (the kubelet tick does too); True if awake."""
        pod = self.store.find(PODS, namespace, name)
        if pod is None:
            return False
        t = self.timelines.get(pod["metadata"]["uid"])
        if t is None:
            return False
        if not is_terminating(pod):
            self._kubelet(pod, self.clock.now_s())
        return not t.asleep

    def waking_until_s(self, namespace: str, name: str) -> float | None:
        """When the wake in progress is done (None: no wake in progress)."""
        pod = self.store.find(PODS, namespace, name)
        t = self.timelines.get(pod["metadata"]["uid"]) if pod is not None else None
        return t.awake_at_s if t is not None and not is_terminating(pod or {}) else None

    def is_sleeping(self, namespace: str, name: str) -> bool:
        """True from `sleep_pod` until the wake that follows is done."""
        pod = self.store.find(PODS, namespace, name)
        t = self.timelines.get(pod["metadata"]["uid"]) if pod is not None else None
        return bool(t is not None and t.asleep)

    # background loop ---------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, max_wait_real_s: float = 0.25) -> None:
        """Tick whenever the store changes or a transition falls due, until `stop` is set."""
        changed = asyncio.Event()

        def on_change(_event: ChangeEvent) -> None:
            changed.set()

        self.store.listeners.append(on_change)
        try:
            while not stop.is_set():
                changed.clear()
                due = self.tick()
                wait = (
                    max_wait_real_s
                    if due is None
                    else min(max_wait_real_s, self.clock.real_delay_s(due) + 1e-3)
                )
                await wait_any(changed, stop, timeout_s=wait)
        finally:
            self.store.listeners.remove(on_change)


def _bound_status(containers: list[Obj]) -> Obj:
    """A pod's status from its binding to a node on: scheduled, containers being created."""
    now = _now_rfc3339()
    return {
        "phase": "Pending",
        "hostIP": POD_IP,
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {
                "type": "ContainersReady",
                "status": "False",
                "reason": "ContainersNotReady",
                "lastTransitionTime": now,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "ContainersNotReady",
                "lastTransitionTime": now,
            },
        ],
        "containerStatuses": [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
            for c in containers
        ],
    }


def _bind_spec(node: str) -> Callable[[Obj], None]:
    def bind(pod: Obj) -> None:
        pod["spec"]["nodeName"] = node

    return bind


def _bind_status(pod: Obj) -> None:
    pod["status"] = _bound_status(pod["spec"].get("containers") or [])


def _nominate(node: str) -> Callable[[Obj], None]:
    def nominate(pod: Obj) -> None:
        pod["status"]["nominatedNodeName"] = node

    return nominate


def _unschedulable(message: str) -> Callable[[Obj], None]:
    def mark(pod: Obj) -> None:
        conds = [
            c for c in pod["status"].get("conditions") or [] if c.get("type") != "PodScheduled"
        ]
        old = next(
            (c for c in pod["status"].get("conditions") or [] if c.get("type") == "PodScheduled"),
            None,
        )
        since = old.get("lastTransitionTime") if old and old.get("status") == "False" else None
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": None,
                "lastTransitionTime": since or _now_rfc3339(),
            },
            *conds,
        ]

    return mark


def _node_state(node: Obj) -> tuple[Any, ...]:
    status = node.get("status") or {}
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return (ready, status.get("images"), status.get("allocatable"))


def _condition_message(pod: Obj, type_: str) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c.get("message")
    return None


def _condition_reason(pod: Obj, type_: str) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c.get("reason")
    return None


def _deletion_cost(pod: Obj) -> int:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(
        "controller.kubernetes.io/pod-deletion-cost", "0"
    )
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0  # the apiserver refuses a non-integer cost; one that got in counts as 0


def _max_unavailable(d: Obj, replicas: int) -> int:
    value = ((d["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get(
        "maxUnavailable", "25%"
    )
    if isinstance(value, str) and value.endswith("%"):
        return int(math.floor(replicas * float(value[:-1]) / 100.0))
    return int(value)


def _copy(obj: Any) -> Any:
    import copy

    return copy.deepcopy(obj)


def _set_container_states(pod: Obj, *, running: bool, ready: bool) -> None:
    now = _now_rfc3339()
    for cs in pod["status"].get("containerStatuses") or []:
        cs["ready"] = ready
        cs["started"] = running
        if running:
            started_at = (cs.get("state") or {}).get("running", {}).get("startedAt", now)
            cs["state"] = {"running": {"startedAt": started_at}}


def _set_condition(pod: Obj, type_: str, ok: bool) -> None:
    now = _now_rfc3339()
    for cond in pod["status"].setdefault("conditions", []):
        if cond.get("type") == type_:
            if cond.get("status") != ("True" if ok else "False"):
                cond["status"] = "True" if ok else "False"
                cond["lastTransitionTime"] = now
            if ok:
                cond.pop("reason", None)
            else:
                cond["reason"] = "ContainersNotReady"
            return
    pod["status"]["conditions"].append(
        {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": now}
    )


def _set_running(pod: Obj) -> None:
    pod["status"]["phase"] = "Running"
    pod["status"]["podIP"] = POD_IP
    pod["status"]["podIPs"] = [{"ip": POD_IP}]
    _set_container_states(pod, running=True, ready=False)


def _set_ready(pod: Obj) -> None:
    _set_running(pod)
    _set_container_states(pod, running=True, ready=True)
    _set_condition(pod, "ContainersReady", True)
    _set_condition(pod, "Ready", True)


def _set_not_ready(pod: Obj) -> None:
    _set_container_states(pod, running=True, ready=False)
    _set_condition(pod, "ContainersReady", False)
    _set_condition(pod, "Ready", False)
