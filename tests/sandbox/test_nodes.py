"""The opt-in node pool (issue 15 item 3): GPU fit, unschedulable pods and the
cluster-autoscaler, placeholder pods preempted by a scale-up and recreated onto a new node,
node-local image and weight caches; on a hand-stepped clock, then once through a Sandbox."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from kubernetes import client as k8s

from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.sandbox.apiserver.resources import DEPLOYMENTS, EVENTS, PODS, Obj
from rlscale.sandbox.apiserver.store import Store
from rlscale.sandbox.kubelet import ClusterController, ManualClock, is_ready, is_terminating
from rlscale.sandbox.nodes import NodePool, placeholder_manifest
from rlscale.sandbox.runner import Sandbox, deployment_manifest
from tests.sandbox.test_kubelet import NAME, NS, scale

PLACEHOLDER = f"{NAME}-placeholder"


def cluster(
    profile: ServiceProfile, pool: NodePool, replicas: int = 1, placeholders: int = 0
) -> tuple[Store, ClusterController, ManualClock]:
    store, clock = Store(), ManualClock()
    ctl = ClusterController(store, profile, clock, seed=3, nodes=pool)
    store.create(DEPLOYMENTS, NS, deployment_manifest(NAME, NS, replicas, profile))
    if placeholders:
        store.create(
            DEPLOYMENTS,
            NS,
            placeholder_manifest(NAME, NS, placeholders, profile.gpus_per_replica),
        )
    ctl.tick()
    return store, ctl, clock


def run_for(
    ctl: ClusterController, clock: ManualClock, seconds: float, step_s: float = 0.5
) -> None:
    end = clock.now_s() + seconds
    while clock.now_s() < end:
        clock.advance(step_s)
        ctl.tick()


def model_pods(store: Store) -> list[Obj]:
    return [p for p in store.list(PODS, NS) if p["metadata"]["labels"]["app"] == NAME]


def holders(store: Store) -> list[Obj]:
    return [p for p in store.list(PODS, NS) if p["metadata"]["labels"]["app"] == PLACEHOLDER]


def scheduled(pod: Obj) -> tuple[str, str | None]:
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    return cond["status"], cond.get("reason")


def ready_time(ctl: ClusterController, clock: ManualClock, store: Store, name: str) -> float:
    while not is_ready(store.get(PODS, NS, name)):
        clock.advance(0.25)
        ctl.tick()
        assert clock.now_s() < 5000, "never Ready"
    return clock.now_s()


def test_a_pod_that_fits_nowhere_waits_unschedulable_for_the_node_the_autoscaler_adds(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = cluster(tiny_profile, NodePool(gpus_per_node=1, initial_nodes=1))
    (first,) = model_pods(store)
    assert first["spec"]["nodeName"] == "gpu-node-1" and scheduled(first) == ("True", None)
    scale(store, 2)
    ctl.tick()
    (new,) = [p for p in model_pods(store) if p["metadata"]["name"] != first["metadata"]["name"]]
    assert scheduled(new) == ("False", "Unschedulable") and not new["spec"].get("nodeName")
    assert "Insufficient nvidia.com/gpu" in next(
        c["message"] for c in new["status"]["conditions"] if c["type"] == "PodScheduled"
    )
    assert {e["reason"] for e in store.list(EVENTS, NS)} >= {"FailedScheduling", "TriggeredScaleUp"}
    assert ctl.node_fleet is not None
    node = ctl.node_fleet.nodes["gpu-node-2"]
    assert 80.0 <= node.ready_at_s - clock.now_s() <= 120.0  # tf_node: 80-120 s
    run_for(ctl, clock, node.ready_at_s - clock.now_s() - 1.0)
    assert not store.get(PODS, NS, new["metadata"]["name"])["spec"].get("nodeName")
    run_for(ctl, clock, 1.5)
    assert store.get(PODS, NS, new["metadata"]["name"])["spec"]["nodeName"] == "gpu-node-2"


def test_the_autoscaler_stops_at_max_nodes_and_removes_empty_nodes_after_the_unneeded_time(
    tiny_profile: ServiceProfile,
) -> None:
    pool = NodePool(gpus_per_node=1, initial_nodes=1, max_nodes=2, scale_down_unneeded_s=600)
    store, ctl, clock = cluster(tiny_profile, pool, replicas=3)
    assert ctl.node_fleet is not None and len(ctl.node_fleet.nodes) == 2
    run_for(ctl, clock, 200, step_s=2)
    assert sum(1 for p in model_pods(store) if p["spec"].get("nodeName")) == 2  # one waits
    scale(store, 0)
    run_for(ctl, clock, 60, step_s=2)  # grace 30 s: the pods are gone, the nodes empty
    assert model_pods(store) == [] and len(ctl.node_fleet.nodes) == 2
    run_for(ctl, clock, 600, step_s=5)
    assert ctl.node_fleet.nodes == {}


def test_a_scale_up_preempts_a_placeholder_and_starts_without_waiting_for_a_node(
    tiny_profile: ServiceProfile,
) -> None:
    pool = NodePool(gpus_per_node=1, initial_nodes=2)
    store, ctl, clock = cluster(tiny_profile, pool, replicas=1, placeholders=1)
    run_for(ctl, clock, 60)
    (holder,) = holders(store)
    assert is_ready(holder) and holder["spec"]["priority"] == -10
    assert "prometheus.io/port" not in (holder["metadata"].get("annotations") or {})

    scale(store, 2)
    t0 = clock.now_s()
    ctl.tick()
    victim = store.get(PODS, NS, holder["metadata"]["name"])
    assert is_terminating(victim)
    (preempted,) = [e for e in store.list(EVENTS, NS) if e["reason"] == "Preempted"]
    assert preempted["involvedObject"]["name"] == holder["metadata"]["name"]
    (new,) = [p for p in model_pods(store) if not p["spec"].get("nodeName")]
    assert new["status"]["nominatedNodeName"] == holder["spec"]["nodeName"]

    ready_at = ready_time(ctl, clock, store, new["metadata"]["name"])
    cold = ctl.timelines[new["metadata"]["uid"]].cold_start_s
    assert 20.0 <= cold <= 40.0  # the tiny profile's own start: no node to wait for
    assert ready_at - t0 == pytest.approx(1.0 + cold, abs=0.6)  # the pause pod's 1 s exit
    # the placeholder's ReplicaSet made a new one: it fits nowhere and waits for a new node
    (again,) = holders(store)
    assert again["metadata"]["name"] != holder["metadata"]["name"]
    assert scheduled(again) == ("False", "Unschedulable")
    assert ctl.node_fleet is not None and len(ctl.node_fleet.nodes) == 3
    node3 = ctl.node_fleet.nodes["gpu-node-3"]
    assert 80.0 <= node3.ready_at_s - t0 <= 121.0
    run_for(ctl, clock, node3.ready_at_s - clock.now_s() + 2.0)
    again = store.get(PODS, NS, again["metadata"]["name"])
    assert again["spec"]["nodeName"] == "gpu-node-3" and is_ready(again)


def test_without_a_placeholder_the_same_scale_up_waits_for_the_node_first(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = cluster(tiny_profile, NodePool(gpus_per_node=1, initial_nodes=1))
    run_for(ctl, clock, 60)
    scale(store, 2)
    t0 = clock.now_s()
    ctl.tick()
    (new,) = [p for p in model_pods(store) if not p["spec"].get("nodeName")]
    waited = ready_time(ctl, clock, store, new["metadata"]["name"]) - t0
    assert waited >= 80.0 + 20.0  # a node (80-120 s), then the start


def starts_on(profile: ServiceProfile, pool: NodePool, seeds: range) -> list[float]:
    """bind -> Ready of the second replica, on the node the autoscaler adds for it."""
    out = []
    for seed in seeds:
        store, clock = Store(), ManualClock()
        ctl = ClusterController(store, profile, clock, seed=seed, nodes=pool)
        store.create(DEPLOYMENTS, NS, deployment_manifest(NAME, NS, 1, profile))
        ctl.tick()
        scale(store, 2)
        ctl.tick()
        assert ctl.node_fleet is not None
        run_for(ctl, clock, 1500, step_s=10)  # the node is up and the pre-pull has landed
        scale(store, 1)  # the first replica goes; the second binds where the first ran
        run_for(ctl, clock, 60, step_s=5)
        scale(store, 2)
        ctl.tick()
        (new,) = [p for p in model_pods(store) if not is_terminating(p) and not is_ready(p)]
        out.append(ctl.timelines[new["metadata"]["uid"]].cold_start_s)
    return out


def test_a_node_that_has_the_image_skips_the_pull_and_preloaded_weights_load_faster() -> None:
    profile = load_profile("llama-3.1-8b-h100")  # pull 300-600 s, weights 3/15/40 s
    pool = NodePool(gpus_per_node=1, initial_nodes=0, min_nodes=0)
    store, clock = Store(), ManualClock()
    ctl = ClusterController(store, profile, clock, seed=0, nodes=pool)
    store.create(DEPLOYMENTS, NS, deployment_manifest(NAME, NS, 1, profile))
    ctl.tick()
    (pod,) = model_pods(store)
    run_for(ctl, clock, 2000, step_s=5)
    t = ctl.timelines[pod["metadata"]["uid"]]
    assert t.node == "gpu-node-1" and t.cold_start_s >= 300.0 + 3 + 8 + 14  # a new node pulls
    assert ctl.node_fleet is not None and ctl.node_fleet.has_image(
        "gpu-node-1", "vllm/vllm-openai:latest"
    )

    stages_no_pull_max = 40 + 45 + 35
    cached = starts_on(profile, pool, range(6))
    assert max(cached) <= stages_no_pull_max  # the image is cached where a replica ran
    preloaded = starts_on(
        profile, NodePool(gpus_per_node=1, initial_nodes=0, preloaded=True), range(6)
    )
    assert max(preloaded) <= 15 + 45 + 35  # weights from local disk: the 40 s tail is cut
    assert sum(preloaded) < sum(cached)


def test_a_preloaded_pool_copies_image_and_weights_onto_a_new_node_after_it_is_ready() -> None:
    profile = load_profile("llama-3.1-8b-h100")
    pool = NodePool(gpus_per_node=1, initial_nodes=0, preloaded=True)
    store, clock = Store(), ManualClock()
    ctl = ClusterController(store, profile, clock, seed=1, nodes=pool)
    store.create(DEPLOYMENTS, NS, placeholder_manifest(NAME, NS, 1, 1))
    ctl.tick()
    assert ctl.node_fleet is not None
    node = ctl.node_fleet.nodes["gpu-node-1"]
    (image_at, _, _), (weights_at, _, model) = node.arriving
    assert image_at - node.ready_at_s >= 300.0 and weights_at > image_at
    assert model == profile.model
    run_for(ctl, clock, weights_at + 1.0, step_s=5)
    assert node.weights == {profile.model} and node.images


def test_the_pool_validates_its_configuration() -> None:
    with pytest.raises(ValueError, match="gpus_per_node = 0"):
        NodePool(gpus_per_node=0)
    with pytest.raises(ValueError, match="min_nodes = 5"):
        NodePool(min_nodes=5, max_nodes=2)


def test_a_sandbox_with_a_node_pool_serves_a_scale_up_from_a_placeholder(
    make_sandbox: Callable[..., Sandbox], tiny_profile: ServiceProfile
) -> None:
    sb = make_sandbox(replicas=1, time_scale=120, nodes=NodePool(gpus_per_node=1, initial_nodes=2))
    sb.create_placeholder(1)
    sb.wait_for(lambda: any(is_ready(p) for p in sb.placeholder_pods()), 5)
    sb.wait_for_ready(1, timeout_s=10)
    assert [n["gpus_free"] for n in sb.nodes()] == [0, 0]
    sb.call(lambda s: scale(s, 2))
    sb.wait_for_ready(2, timeout_s=10)  # 1 s + 20-40 s at 120x: well under the node's 80 s
    (again,) = [p for p in sb.placeholder_pods() if not is_terminating(p)]
    assert not again["spec"].get("nodeName")
    assert len(sb.nodes()) == 3 and not sb.nodes()[-1]["ready"]
    assert len(sb.pod_metrics_urls()) == 2  # the placeholder serves nothing


def test_the_pool_s_nodes_are_served_read_only_to_the_official_client_and_kubectl(
    make_sandbox: Callable[..., Sandbox],
    client_for: Callable[[Sandbox], k8s.ApiClient],
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    sb = make_sandbox(replicas=2, time_scale=30, nodes=NodePool(gpus_per_node=1, initial_nodes=1))
    core = k8s.CoreV1Api(client_for(sb))
    sb.wait_for(lambda: len(core.list_node().items) == 2, 5)
    booted, booting = sorted(core.list_node().items, key=lambda n: n.metadata.name)
    assert booted.status.allocatable["nvidia.com/gpu"] == "1"
    assert [c.status for c in booting.status.conditions if c.type == "Ready"] == ["False"]
    out = kubectl(sb, "get", "nodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [line.split()[1] for line in out[1:]] == ["Ready", "NotReady"]
    sb.wait_for_ready(2, timeout_s=15)  # the node booted (80-120 s at 30x), then the pod started
    second = core.read_node("gpu-node-2")
    assert [c.status for c in second.status.conditions if c.type == "Ready"] == ["True"]
    assert second.status.images and second.status.images[0].names == ["vllm/vllm-openai:latest"]
    with pytest.raises(k8s.exceptions.ApiException) as e:
        core.delete_node("gpu-node-2")
    assert e.value.status == 405
