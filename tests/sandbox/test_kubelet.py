"""The simulated deployment controller and kubelet, on a hand-stepped clock (no threads, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.profiles.model import ServiceProfile
from rlscale.sandbox.apiserver.resources import DEPLOYMENTS, EVENTS, PODS
from rlscale.sandbox.apiserver.store import Store
from rlscale.sandbox.kubelet import (
    ClusterController,
    ManualClock,
    ScaledClock,
    is_ready,
    is_terminating,
)
from rlscale.sandbox.runner import deployment_manifest

NS, NAME = "default", "llm"


def setup(
    profile: ServiceProfile, replicas: int = 1, seed: int = 0
) -> tuple[Store, ClusterController, ManualClock]:
    store = Store()
    clock = ManualClock()
    ctl = ClusterController(store, profile, clock, seed=seed, pending_share=0.5)
    store.create(DEPLOYMENTS, NS, deployment_manifest(NAME, NS, replicas, profile))
    return store, ctl, clock


def scale(store: Store, replicas: int) -> None:
    store.patch(
        DEPLOYMENTS, NS, NAME, "application/merge-patch+json", {"spec": {"replicas": replicas}}
    )


def pods(store: Store) -> list[dict]:
    return store.list(PODS, NS)


def test_new_pod_is_pending_then_running_then_ready_after_its_cold_start(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = setup(tiny_profile)
    ctl.tick()
    (pod,) = pods(store)
    cold = ctl.timelines[pod["metadata"]["uid"]].cold_start_s
    assert 20.0 <= cold <= 40.0
    assert pod["status"]["phase"] == "Pending"
    assert (
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    )
    assert not is_ready(pod)

    clock.advance(cold * 0.5 + 0.01)
    ctl.tick()
    (pod,) = pods(store)
    assert pod["status"]["phase"] == "Running" and not is_ready(pod)
    assert pod["status"]["podIP"] == "127.0.0.1"

    clock.advance(cold * 0.5)
    ctl.tick()
    (pod,) = pods(store)
    assert is_ready(pod)
    assert pod["status"]["containerStatuses"][0]["ready"] is True


def test_tick_reports_when_the_next_transition_is_due(tiny_profile: ServiceProfile) -> None:
    store, ctl, clock = setup(tiny_profile)
    due = ctl.tick()
    (pod,) = pods(store)
    t = ctl.timelines[pod["metadata"]["uid"]]
    assert due == pytest.approx(t.running_at_s)
    clock.advance(t.ready_at_s + 1)
    assert ctl.tick() is None


def test_cold_starts_are_drawn_from_the_profile_and_reproducible_with_a_seed(
    tiny_profile: ServiceProfile,
) -> None:
    def draws(seed: int) -> list[float]:
        store, ctl, _ = setup(tiny_profile, replicas=5, seed=seed)
        ctl.tick()
        return sorted(t.cold_start_s for t in ctl.timelines.values())

    expected = sorted(tiny_profile.sample_cold_start_s(np.random.default_rng(3), 5))
    assert draws(3) == pytest.approx(expected)
    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_pods_are_named_and_labelled_like_replicaset_pods(tiny_profile: ServiceProfile) -> None:
    store, ctl, _ = setup(tiny_profile, replicas=2)
    ctl.tick()
    for pod in pods(store):
        meta = pod["metadata"]
        h = meta["labels"]["pod-template-hash"]
        assert meta["labels"]["app"] == NAME
        assert (
            meta["name"].startswith(f"{NAME}-{h}-") and len(meta["name"]) == len(f"{NAME}-{h}-") + 5
        )
        (owner,) = meta["ownerReferences"]
        assert (
            owner["kind"] == "ReplicaSet"
            and owner["name"] == f"{NAME}-{h}"
            and owner["controller"] is True
        )


def ready_all(ctl: ClusterController, clock: ManualClock) -> None:
    ctl.tick()
    clock.advance(100.0)
    ctl.tick()


def test_scale_down_terminates_the_newest_ready_pods_first(tiny_profile: ServiceProfile) -> None:
    store, ctl, clock = setup(tiny_profile, replicas=1)
    ready_all(ctl, clock)
    oldest = pods(store)[0]["metadata"]["name"]
    scale(store, 3)
    ready_all(ctl, clock)
    by_age = sorted(pods(store), key=lambda p: ctl.timelines[p["metadata"]["uid"]].created_s)
    assert by_age[0]["metadata"]["name"] == oldest and all(is_ready(p) for p in by_age)

    scale(store, 2)
    ctl.tick()
    terminating = [p["metadata"]["name"] for p in pods(store) if is_terminating(p)]
    assert terminating == [by_age[-1]["metadata"]["name"]]
    scale(store, 1)
    ctl.tick()
    live = [p["metadata"]["name"] for p in pods(store) if not is_terminating(p)]
    assert live == [oldest]


def test_scale_down_prefers_pods_that_are_not_ready(tiny_profile: ServiceProfile) -> None:
    store, ctl, clock = setup(tiny_profile, replicas=2)
    ready_all(ctl, clock)
    ready_names = {p["metadata"]["name"] for p in pods(store)}
    scale(store, 3)
    ctl.tick()  # the third pod is still cold-starting
    scale(store, 2)
    ctl.tick()
    live = {p["metadata"]["name"] for p in pods(store) if not is_terminating(p)}
    assert live == ready_names


def test_terminating_pod_turns_unready_and_is_removed_after_its_grace_period(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = setup(tiny_profile, replicas=1)
    ready_all(ctl, clock)
    scale(store, 0)
    ctl.tick()
    (pod,) = pods(store)
    assert is_terminating(pod) and not is_ready(pod)
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    clock.advance(29.0)
    ctl.tick()
    assert len(pods(store)) == 1
    clock.advance(1.5)
    ctl.tick()
    assert pods(store) == []


def test_deployment_status_counts_replicas_ready_available_and_observed_generation(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = setup(tiny_profile, replicas=2)
    ctl.tick()
    d = store.get(DEPLOYMENTS, NS, NAME)
    assert d["status"]["replicas"] == 2
    assert "readyReplicas" not in d["status"]  # zero is omitted, as the apiserver encodes it
    assert d["status"]["unavailableReplicas"] == 2
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"] == 1
    clock.advance(100.0)
    ctl.tick()
    d = store.get(DEPLOYMENTS, NS, NAME)
    assert d["status"]["readyReplicas"] == d["status"]["availableReplicas"] == 2
    assert "unavailableReplicas" not in d["status"]
    conditions = {c["type"]: c["status"] for c in d["status"]["conditions"]}
    assert conditions == {"Available": "True", "Progressing": "True"}

    scale(store, 3)
    d = store.get(DEPLOYMENTS, NS, NAME)
    assert d["metadata"]["generation"] == 2 and d["status"]["observedGeneration"] == 1
    ctl.tick()
    d = store.get(DEPLOYMENTS, NS, NAME)
    assert d["status"]["observedGeneration"] == 2
    assert d["status"]["replicas"] == 3 and d["status"]["readyReplicas"] == 2


def test_scaling_emits_scaling_replicaset_events(tiny_profile: ServiceProfile) -> None:
    store, ctl, _ = setup(tiny_profile, replicas=2)
    ctl.tick()
    scale(store, 1)
    ctl.tick()
    messages = [e["message"] for e in store.list(EVENTS, NS)]
    assert any(
        m.startswith("Scaled up replica set llm-") and m.endswith("to 2 from 0") for m in messages
    )
    assert any(m.endswith("to 1 from 2") for m in messages)
    assert {e["reason"] for e in store.list(EVENTS, NS)} == {"ScalingReplicaSet"}


def test_deleting_a_deployment_garbage_collects_its_pods(tiny_profile: ServiceProfile) -> None:
    store, ctl, clock = setup(tiny_profile, replicas=2)
    ready_all(ctl, clock)
    store.delete(DEPLOYMENTS, NS, NAME)
    ctl.tick()
    assert all(is_terminating(p) for p in pods(store))
    clock.advance(31.0)
    ctl.tick()
    assert pods(store) == []


def test_a_deleted_pod_is_replaced(tiny_profile: ServiceProfile) -> None:
    store, ctl, clock = setup(tiny_profile, replicas=1)
    ready_all(ctl, clock)
    (pod,) = pods(store)
    store.delete(PODS, NS, pod["metadata"]["name"], grace_period_s=0)
    ctl.tick()
    (replacement,) = pods(store)
    assert replacement["metadata"]["name"] != pod["metadata"]["name"]
    assert replacement["status"]["phase"] == "Pending"


def test_scaled_clock_compresses_time() -> None:
    now = [100.0]
    clock = ScaledClock(60.0, monotonic=lambda: now[0])
    now[0] += 0.5
    assert clock.now_s() == pytest.approx(30.0)
    assert clock.real_delay_s(60.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ScaledClock(0.0)
