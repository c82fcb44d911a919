"""An emulated GPU node pool: the scheduler's GPU fit and preemption, the cluster-autoscaler, and
what each node has on local disk. Opt-in (`Sandbox(nodes=NodePool(...))`); without it every pod
runs on the one `sandbox-node` at once, as before.

What is emulated, and how faithfully:

- Nodes have `gpus_per_node` GPUs (`nvidia.com/gpu`). A pod asks for the sum of its containers'
  `nvidia.com/gpu` (requests, else limits: an extended resource's request is its limit).
- Scheduler: pods wait unbound (Pending) until a Ready node has the GPUs free, highest
  `spec.priority` first, then the oldest; among nodes that fit, the one with the most GPUs free
  (the default scheduler's LeastAllocated score). A pod that fits nowhere preempts: on the node
  where the fewest lower-priority pods free enough GPUs, those pods are deleted with their grace
  period (an Event `Preempted` on each) and the pod is nominated (`status.nominatedNodeName`); it
  binds once they are gone. GPUs of a terminating pod stay taken until it is removed. A pod
  that can neither fit nor preempt is marked `PodScheduled=False, reason=Unschedulable` with
  the scheduler's message (and one `FailedScheduling` Event).
- Priorities come from `spec.priorityClassName` through `NodePool.priority_classes` (the
  admission plugin's lookup; PriorityClass objects are not served); no class: 0.
- Cluster-autoscaler: for unschedulable pods at or above `expendable_priority_cutoff` (CA's
  `--expendable-pods-priority-cutoff`, default -10) it adds nodes, first-fit onto the nodes
  already coming, up to `max_nodes`; a node is Ready after a draw from the profile's node stage
  (`tf_node`, 80-120 s, in the shipped profiles; (80, 100, 120) if the profile has none), made
  with probability 1 and its own seeded stream. A node without pods for `scale_down_unneeded_s`
  (CA's `--scale-down-unneeded-time`, 600 s) is removed, down to `min_nodes`. Not emulated: the
  scan interval (10 s), scale-down of nodes that are merely under-used, node groups.
- Node-local cache: each node holds images and model weights. A model pod bound to a node starts
  with `profiles.standby.bound_start`: no node stage (its Pending time is the real wait), no
  image pull when the node has the image (it has it once a model pod ran there), weights from
  local disk when the node has them. Weights reach a node only through `preloaded`: the pre-pull
  DaemonSet, which on each new node pulls the image (the pull stage) and then copies the weights
  (the weight stage, as is) once the node is Ready; a pod bound before the copy is done starts
  without it. The nodes the sandbox starts with have the image (the service ran there) and,
  when `preloaded`, the weights.
- Placeholder pods (pause containers, `registry.k8s.io/pause`): no vLLM server, no metrics;
  Ready `PAUSE_START_S` after binding, gone `PAUSE_EXIT_S` after deletion (pause exits on
  SIGTERM; a shorter grace period wins). This is the cluster-autoscaler's over-provisioning
  pattern: a replica that fits nowhere preempts a placeholder and takes its node; the
  placeholder's ReplicaSet recreates it, it is unschedulable, and the autoscaler adds a node.
- Node objects: the stand-in API serves them read-only (`kubectl get nodes`, `/api/v1/nodes`):
  created when the autoscaler asks for the node, Ready once it has booted, deleted at scale-down;
  `status.capacity`/`allocatable` `nvidia.com/gpu`, cached images in `status.images`, cached
  weights in the annotation `rlscale.io/cached-weights`. Timestamps are wall-clock, as the
  pods'. `NodeFleet.describe()` (`Sandbox.nodes()`) gives the same with simulated times.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rlscale.profiles.model import ServiceProfile, Stage
from rlscale.profiles.standby import bound_start, find_stage, sample_stages_s
from rlscale.sandbox.apiserver.store import rfc3339

Obj = dict[str, Any]

GPU = "nvidia.com/gpu"
POOL_NAME = "sandbox-gpu-pool"
PLACEHOLDER_PRIORITY_CLASS = "rlscale-placeholder"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
PAUSE_START_S = 1.0  # bind -> Ready of a pause container (a 300 kB image, nothing to load)
PAUSE_EXIT_S = 1.0  # delete -> gone: pause exits on SIGTERM without waiting its grace period
# `tf_node` in cold_start_measurements.csv: a cloud provider boots a new GPU instance in 80-120 s
DEFAULT_NODE_STAGE = Stage(name="node_provisioning", low_s=80.0, mode_s=100.0, high_s=120.0)


@dataclass(frozen=True)
class NodePool:
    """The node pool's configuration (see the module docstring)."""

    gpus_per_node: int = 8
    initial_nodes: int = 1
    min_nodes: int = 0
    max_nodes: int = 16
    scale_down_unneeded_s: float = 600.0
    preloaded: bool = False
    priority_classes: dict[str, int] = field(
        default_factory=lambda: {PLACEHOLDER_PRIORITY_CLASS: -10}
    )
    expendable_priority_cutoff: int = -10

    def __post_init__(self) -> None:
        if self.gpus_per_node < 1:
            raise ValueError(f"gpus_per_node = {self.gpus_per_node}, must be >= 1")
        if not 0 <= self.min_nodes <= self.max_nodes:
            raise ValueError(
                f"min_nodes = {self.min_nodes}, must be within [0, max_nodes ({self.max_nodes})]"
            )
        if not 0 <= self.initial_nodes <= self.max_nodes:
            raise ValueError(
                f"initial_nodes = {self.initial_nodes}, must be within [0, max_nodes "
                f"({self.max_nodes})]"
            )
        if not self.scale_down_unneeded_s >= 0:
            raise ValueError(f"scale_down_unneeded_s = {self.scale_down_unneeded_s}, must be >= 0")


@dataclass
class Node:
    name: str
    gpus: int
    created_s: float
    ready_at_s: float
    images: set[str] = field(default_factory=set)
    weights: set[str] = field(default_factory=set)
    # the pre-pull DaemonSet's copies still to land: (at_s, "image" | "weights", what)
    arriving: list[tuple[float, str, str]] = field(default_factory=list)
    empty_since_s: float | None = None
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def ready(self, now_s: float) -> bool:
        return now_s >= self.ready_at_s


def gpus_requested(pod_or_template_spec: Obj) -> int:
    """The pod's `nvidia.com/gpu`, summed over its containers (requests, else limits)."""
    total = 0
    for c in pod_or_template_spec.get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("requests") or {}).get(GPU, (res.get("limits") or {}).get(GPU, 0))
        total += int(value)
    return total


def is_pause(spec: Obj) -> bool:
    """Only pause containers: a placeholder, with no server in it."""
    containers = spec.get("containers") or []
    return bool(containers) and all(
        "/pause:" in str(c.get("image", "")) or str(c.get("image", "")).endswith("/pause")
        for c in containers
    )


def _model_of(spec: Obj, default: str) -> str:
    args = [str(a) for a in ((spec.get("containers") or [{}])[0].get("args") or [])]
    return args[args.index("--model") + 1] if "--model" in args[:-1] else default


def _image_of(spec: Obj) -> str:
    return str(((spec.get("containers") or [{}])[0]).get("image", ""))


@dataclass
class Decision:
    """What one scheduler pass decided; the kubelet applies it to the pods in the store."""

    binds: list[tuple[Obj, str]] = field(default_factory=list)  # (pod, node)
    preemptions: list[tuple[Obj, Obj, str]] = field(default_factory=list)  # (victim, by, node)
    nominated: list[tuple[Obj, str]] = field(default_factory=list)  # waiting for victims
    unschedulable: list[tuple[Obj, str]] = field(default_factory=list)  # (pod, message)
    scale_ups: list[tuple[Obj, str]] = field(default_factory=list)  # (pod that triggered, node)


class NodeFleet:
    """The pool's nodes, the scheduler's and cluster-autoscaler's decisions, the cache."""

    def __init__(
        self, pool: NodePool, profile: ServiceProfile, *, seed: int = 0, now_s: float = 0.0
    ) -> None:
        self.pool = pool
        self.profile = profile
        self.nodes: dict[str, Node] = {}
        self._rng = np.random.default_rng([seed, 2])
        self._count = 0
        self._node_stage = find_stage(profile, "node") or DEFAULT_NODE_STAGE
        self.image = ""  # the model server's image, set by the kubelet from the first model pod
        for _ in range(pool.initial_nodes):
            node = self._add(now_s, ready_at_s=now_s)
            node.images.add("*")  # the service ran there: whatever image it runs is cached
            if pool.preloaded:
                node.weights.add(profile.model)

    # nodes ------------------------------------------------------------------------------
    def _add(self, now_s: float, ready_at_s: float) -> Node:
        self._count += 1
        name = f"gpu-node-{self._count}"
        node = Node(name, self.pool.gpus_per_node, created_s=now_s, ready_at_s=ready_at_s)
        self.nodes[name] = node
        return node

    def provision_s(self) -> float:
        stage = self._node_stage.model_copy(update={"probability": 1.0})
        return float(sample_stages_s(self.profile, [stage], self._rng, 1)[0])

    def _preload(self, node: Node, image: str) -> None:
        """The pre-pull DaemonSet on a new node: pull the image, then copy the weights."""
        pull, weights = find_stage(self.profile, "image_pull"), find_stage(self.profile, "weight")
        at = node.ready_at_s
        if pull is not None:
            at += float(
                sample_stages_s(
                    self.profile, [pull.model_copy(update={"probability": 1.0})], self._rng, 1
                )[0]
            )
        node.arriving.append((at, "image", image or "*"))
        if weights is not None:
            at += float(sample_stages_s(self.profile, [weights], self._rng, 1)[0])
        node.arriving.append((at, "weights", self.profile.model))

    def has_image(self, node_name: str, image: str) -> bool:
        node = self.nodes.get(node_name)
        return node is not None and (image in node.images or "*" in node.images)

    def cache_image(self, node_name: str, image: str) -> None:
        """A model pod's image was pulled onto the node (kubelet keeps it)."""
        node = self.nodes.get(node_name)
        if node is not None:
            node.images.add(image)

    def start_s(self, node_name: str, spec: Obj) -> float:
        """A draw of the pod's bind -> Ready on this node (see the module docstring)."""
        if is_pause(spec):
            return PAUSE_START_S
        node = self.nodes[node_name]
        stages = bound_start(
            self.profile,
            image_cached=self.has_image(node_name, _image_of(spec)),
            weights_cached=_model_of(spec, self.profile.model) in node.weights,
        )
        return float(sample_stages_s(self.profile, stages, self._rng, 1)[0])

    def next_due_s(self, now_s: float) -> float | None:
        due = []
        for node in self.nodes.values():
            if node.ready_at_s > now_s:
                due.append(node.ready_at_s - now_s)
            due.extend(at - now_s for at, _k, _v in node.arriving if at > now_s)
            if node.empty_since_s is not None:
                at = node.empty_since_s + self.pool.scale_down_unneeded_s
                if at > now_s:
                    due.append(at - now_s)
        return min(due) if due else None

    # one pass ---------------------------------------------------------------------------
    def priority(self, pod: Obj) -> int:
        spec = pod.get("spec") or {}
        if "priority" in spec:
            return int(spec["priority"])
        return int(self.pool.priority_classes.get(str(spec.get("priorityClassName") or ""), 0))

    def tick(self, now_s: float, pods: list[Obj], created_s: dict[str, float]) -> Decision:
        """Land the caches due, schedule the unbound pods, autoscale the nodes. `pods`: every
        pod in the store; `created_s`: their creation (simulated) by uid, the tie-break."""
        for node in self.nodes.values():
            for item in [a for a in node.arriving if a[0] <= now_s]:
                node.arriving.remove(item)
                (node.images if item[1] == "image" else node.weights).add(item[2])
        bound: dict[str, list[Obj]] = {n: [] for n in self.nodes}
        unbound: list[Obj] = []
        for p in pods:
            node_name = (p.get("spec") or {}).get("nodeName")
            if node_name in bound:
                bound[node_name].append(p)
            elif not node_name and not (p.get("metadata") or {}).get("deletionTimestamp"):
                unbound.append(p)
        free = {
            n: node.gpus - sum(gpus_requested(p["spec"]) for p in bound[n])
            for n, node in self.nodes.items()
            if node.ready(now_s)
        }
        decision = Decision()
        unbound.sort(
            key=lambda p: (-self.priority(p), created_s.get(p["metadata"]["uid"], math.inf))
        )
        for pod in unbound:
            want = gpus_requested(pod["spec"])
            fits = [n for n, f in free.items() if f >= want]
            if fits:
                best = max(fits, key=lambda n: (free[n], -self._index(n)))
                free[best] -= want
                decision.binds.append((pod, best))
                continue
            node_name, victims = self._preemption(pod, want, free, bound)
            if node_name is not None:
                free[node_name] -= want  # held for the nominee: nothing else takes them
                decision.nominated.append((pod, node_name))
                decision.preemptions.extend((v, pod, node_name) for v in victims)
                continue
            decision.unschedulable.append((pod, self._unschedulable_message(want, free)))
        self._scale_up(now_s, [p for p, _m in decision.unschedulable], decision)
        self._scale_down(now_s, bound)
        return decision

    def _index(self, name: str) -> int:
        return int(name.rsplit("-", 1)[-1])

    def _preemption(
        self, pod: Obj, want: int, free: dict[str, int], bound: dict[str, list[Obj]]
    ) -> tuple[str | None, list[Obj]]:
        """The node and the fewest lower-priority pods to delete there (none if what is
        terminating there already frees enough), or (None, [])."""
        mine = self.priority(pod)
        best: tuple[int, str, list[Obj]] | None = None
        for n in sorted(free, key=self._index):
            live = [p for p in bound[n] if not p["metadata"].get("deletionTimestamp")]
            leaving = sum(
                gpus_requested(p["spec"])
                for p in bound[n]
                if p["metadata"].get("deletionTimestamp")
            )
            have = free[n] + leaving
            victims: list[Obj] = []
            # lowest priority first (the scheduler evicts from the bottom up)
            for v in sorted((p for p in live if self.priority(p) < mine), key=self.priority):
                if have >= want:
                    break
                victims.append(v)
                have += gpus_requested(v["spec"])
            if have >= want and (best is None or len(victims) < best[0]):
                best = (len(victims), n, victims)
        return (best[1], best[2]) if best is not None else (None, [])

    def _unschedulable_message(self, want: int, free: dict[str, int]) -> str:
        total = len(self.nodes)
        short = sum(1 for f in free.values() if f < want)
        not_ready = total - len(free)
        parts = []
        if short:
            parts.append(f"{short} Insufficient {GPU}")
        if not_ready:
            parts.append(
                f"{not_ready} node(s) had untolerated taint {{node.kubernetes.io/not-ready: }}"
            )
        return f"0/{total} nodes are available: {', '.join(parts) or 'no nodes'}."

    def _scale_up(self, now_s: float, pending: list[Obj], decision: Decision) -> None:
        coming = {
            n: node.gpus for n, node in self.nodes.items() if not node.ready(now_s)
        }  # GPUs left on nodes still booting, first-fit in the pods' order
        for pod in pending:
            if self.priority(pod) < self.pool.expendable_priority_cutoff:
                continue
            want = gpus_requested(pod["spec"])
            if want > self.pool.gpus_per_node:
                continue  # no node of this pool ever fits it
            slot = next((n for n, g in coming.items() if g >= want), None)
            if slot is None:
                if len(self.nodes) >= self.pool.max_nodes:
                    continue
                node = self._add(now_s, ready_at_s=now_s + self.provision_s())
                if self.pool.preloaded:
                    self._preload(node, self.image)
                coming[node.name] = node.gpus
                slot = node.name
                decision.scale_ups.append((pod, node.name))
            coming[slot] -= want

    def _scale_down(self, now_s: float, bound: dict[str, list[Obj]]) -> None:
        for n, node in list(self.nodes.items()):
            if not node.ready(now_s) or bound[n]:
                node.empty_since_s = None
                continue
            if node.empty_since_s is None:
                node.empty_since_s = now_s
            if (
                now_s - node.empty_since_s >= self.pool.scale_down_unneeded_s
                and len(self.nodes) > self.pool.min_nodes
            ):
                del self.nodes[n]

    def node_object(self, name: str, now_s: float) -> Obj:
        """The Node as the API serves it: GPU capacity, Ready once booted, its cached images in
        `status.images` (as a kubelet reports them); cached weights, which no Node field
        shows, in the annotation `rlscale.io/cached-weights`."""
        node = self.nodes[name]
        ready = node.ready(now_s)
        stamp = rfc3339(datetime.now(UTC))
        gpus = {GPU: str(node.gpus), "pods": "110"}
        return {
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "nvidia.com/gpu.present": "true",
                    "rlscale.io/node-pool": POOL_NAME,
                },
                "annotations": {"rlscale.io/cached-weights": ",".join(sorted(node.weights))},
            },
            "spec": {"providerID": f"sandbox://{name}"},
            "status": {
                "capacity": gpus,
                "allocatable": gpus,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                        "lastTransitionTime": stamp,
                        "lastHeartbeatTime": stamp,
                    }
                ],
                "images": [{"names": [i]} for i in sorted(node.images)],
                # every field: the official client refuses a NodeSystemInfo missing one
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": node.boot_id,
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "kernelVersion": "6.8.0",
                    "kubeProxyVersion": "v1.32.0",
                    "kubeletVersion": "v1.32.0",
                    "machineID": node.boot_id.replace("-", ""),
                    "operatingSystem": "linux",
                    "osImage": "Ubuntu 22.04.5 LTS",
                    "systemUUID": node.boot_id,
                },
            },
        }

    def describe(self, pods: list[Obj], now_s: float) -> list[dict[str, Any]]:
        """One row per node: name, gpus, gpus_free, ready, images, weights, pods."""
        rows = []
        for n, node in self.nodes.items():
            mine = [p for p in pods if (p.get("spec") or {}).get("nodeName") == n]
            rows.append(
                {
                    "name": n,
                    "gpus": node.gpus,
                    "gpus_free": node.gpus - sum(gpus_requested(p["spec"]) for p in mine),
                    "ready": node.ready(now_s),
                    "ready_at_s": node.ready_at_s,
                    "images": sorted(node.images),
                    "weights": sorted(node.weights),
                    "pods": sorted(p["metadata"]["name"] for p in mine),
                }
            )
        return rows


def placeholder_manifest(
    target: str,
    namespace: str,
    replicas: int,
    gpus: int,
    *,
    name: str | None = None,
    priority_class: str = PLACEHOLDER_PRIORITY_CLASS,
) -> Obj:
    """The placeholder Deployment of the cluster-autoscaler over-provisioning pattern, as shipped
    for real clusters (kubernetes/warm-pool/placeholder.yaml): `<target>-placeholder`, label
    `app: <target>-placeholder`, a pause container asking for one replica's GPUs, in the
    low PriorityClass `rlscale-placeholder` (-10), so any model pod preempts it."""
    name = name or f"{target}-placeholder"
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": priority_class,
                    "containers": [
                        {
                            "name": "pause",
                            "image": PAUSE_IMAGE,
                            "resources": {
                                "requests": {GPU: str(gpus)},
                                "limits": {GPU: str(gpus)},
                            },
                        }
                    ],
                },
            },
        },
    }
