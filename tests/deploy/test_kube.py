"""The Kubernetes edge: replica counting, the conditional scale write with bounded backoff,
error classification, Events; and the official client against the sandbox's API stand-in."""

from __future__ import annotations

import time

import pytest

from rlscale.deploy.config import KubernetesConfig
from rlscale.deploy.kube import (
    EventRecorder,
    Kube,
    OfficialKubeApi,
    classify,
    replica_state,
    selector_string,
)
from rlscale.deploy.retry import (
    Backoff,
    ConflictError,
    NotFoundError,
    PermanentError,
    TemporaryError,
)
from tests.deploy.fakes import T0, FakeKube


def kube(fake: FakeKube, sleeps: list[float] | None = None, attempts: int = 4) -> Kube:
    clock = iter(range(10_000))
    return Kube(
        fake,
        Backoff(attempts=attempts, base_delay_s=0.2, max_delay_s=2.0, deadline_s=5.0),
        sleep=(sleeps if sleeps is not None else []).append,
        monotonic=lambda: float(next(clock)) * 0.01,
        rng=lambda: 1.0,
    )


def test_counts_ready_starting_and_terminating_pods() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 6, annotations={"rlscale.io/paused": "True"})
    fake.set_pods("llm", "llama", ready=3, starting=2, terminating=1, starting_since_s=T0 - 45)
    rs = kube(fake).observe("llm", "llama", T0, "rlscale.io/paused")
    assert (rs.desired, rs.ready, rs.starting, rs.terminating) == (6, 3, 2, 1)
    assert rs.paused and rs.oldest_starting_s == pytest.approx(45.0)
    assert [r.op for r in fake.requests] == ["get_deployment", "list_pods"]
    assert fake.requests[1].name == "app=llama"


def test_failed_pods_are_neither_capacity_nor_starting() -> None:
    d = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 2}}
    pods = [
        {"metadata": {}, "status": {"phase": "Failed"}},
        {"metadata": {}, "status": {"phase": "Pending"}},
    ]
    rs = replica_state(d, pods, T0, "p")
    assert (rs.failed, rs.starting, rs.ready, rs.paused) == (1, 1, 0, False)


def test_selector_strings_follow_the_label_selector_syntax() -> None:
    sel = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "gone", "operator": "DoesNotExist"},
            {"key": "has", "operator": "Exists"},
        ],
    }
    assert selector_string(sel) == "a=1,b=2,tier in (x,y),!gone,has"
    with pytest.raises(PermanentError):
        selector_string({})


def test_reads_retry_temporary_errors_with_bounded_backoff() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    fake.fail("get_deployment", TemporaryError("500 injected"), TemporaryError("429", delay_s=30))
    sleeps: list[float] = []
    rs = kube(fake, sleeps).observe("llm", "llama", T0, "p")
    assert rs.desired == 2
    assert sleeps == [0.2, 2.0]  # the 429's Retry-After of 30 s is capped at max_delay_s


def test_reads_give_up_after_the_attempts() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    fake.fail("get_deployment", *[TemporaryError("503")] * 10)
    with pytest.raises(TemporaryError):
        kube(fake, attempts=3).observe("llm", "llama", T0, "p")
    assert len([r for r in fake.requests if r.op == "get_deployment"]) == 3


def test_writes_the_scale_conditionally_on_the_resource_version() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    rv = fake.deployments[("llm", "llama")]["metadata"]["resourceVersion"]
    res = kube(fake).apply("llm", "llama", 5, 2, rv)
    assert (res.outcome, res.ok, res.replicas, res.attempts) == ("Scaled", True, 5, 1)
    assert fake.writes("patch_scale")[0].body == {
        "metadata": {"resourceVersion": rv},
        "spec": {"replicas": 5},
    }


def test_a_conflict_from_a_status_update_is_retried_with_the_new_version() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    rv = fake.deployments[("llm", "llama")]["metadata"]["resourceVersion"]
    fake.touch("llm", "llama")
    res = kube(fake).apply("llm", "llama", 5, 2, rv)
    assert (res.outcome, res.attempts) == ("Scaled", 2)
    assert [r.op for r in fake.requests] == ["patch_scale", "read_scale", "patch_scale"]
    assert fake.replicas("llm", "llama") == 5


def test_a_conflict_from_someone_elses_scale_is_respected() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    rv = fake.deployments[("llm", "llama")]["metadata"]["resourceVersion"]
    fake.scale_by_someone_else("llm", "llama", 7)
    res = kube(fake).apply("llm", "llama", 5, 2, rv)
    assert (res.outcome, res.ok, res.replicas) == ("ForeignChange", False, 7)
    assert fake.replicas("llm", "llama") == 7
    assert len(fake.writes("patch_scale")) == 1


def test_a_write_whose_answer_was_lost_is_recognised() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    rv = fake.deployments[("llm", "llama")]["metadata"]["resourceVersion"]
    fake.scale_by_someone_else("llm", "llama", 5)  # as if our first PATCH landed, answer lost
    fake.fail("patch_scale", TemporaryError("read timeout"))
    res = kube(fake).apply("llm", "llama", 5, 2, rv)
    assert (res.outcome, res.ok) == ("AlreadyScaled", True)


def test_a_permanent_error_is_not_retried() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    fake.fail(
        "patch_scale", PermanentError("403 forbidden (check the controller's RBAC)", status=403)
    )
    res = kube(fake).apply("llm", "llama", 5, 2, "x")
    assert (res.outcome, res.attempts) == ("Failed", 1) and "RBAC" in res.error


def test_temporary_write_errors_give_up_bounded() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    fake.fail("patch_scale", *[TemporaryError("500")] * 10)
    sleeps: list[float] = []
    res = kube(fake, sleeps, attempts=3).apply("llm", "llama", 5, 2, "x")
    assert (res.outcome, res.attempts) == ("Failed", 3) and "gave up after 3 attempts" in res.error
    assert sleeps == [0.2, 0.4] and fake.replicas("llm", "llama") == 2


def test_no_write_without_leadership() -> None:
    fake = FakeKube()
    fake.add_deployment("llm", "llama", 2)
    res = kube(fake).apply("llm", "llama", 5, 2, "x", may_write=lambda: False)
    assert res.outcome == "NotLeader" and fake.writes() == []


def test_classify_maps_statuses_to_retry_policies() -> None:
    assert isinstance(classify(409, "Conflict", None, None), ConflictError)
    e = classify(429, "Too Many Requests", b'{"message": "slow down"}', {"Retry-After": "2"})
    assert isinstance(e, TemporaryError) and e.delay_s == 2 and "slow down" in str(e)
    assert isinstance(classify(503, "", None, None), TemporaryError)
    assert isinstance(classify(404, "", None, None), NotFoundError)
    assert "RBAC" in str(classify(403, "Forbidden", None, None))
    assert not classify(422, "Invalid", None, None).retryable


def test_events_name_the_deployment_and_never_raise() -> None:
    fake = FakeKube()
    rec = EventRecorder(fake, instance="me")
    assert rec.record("llm", "llama", "uid-1", "SuccessfulRescale", "New size: 5", T0)
    ev = fake.events[0]
    assert ev["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llama",
        "namespace": "llm",
        "uid": "uid-1",
    }
    assert (ev["reason"], ev["type"], ev["reportingInstance"]) == (
        "SuccessfulRescale",
        "Normal",
        "me",
    )
    fake.fail("create_event", TemporaryError("500"))
    assert rec.record("llm", "llama", "uid-1", "X", "y", T0, warning=True) is False


def test_the_official_client_speaks_to_the_api_stand_in(make_sandbox_no_prom) -> None:
    sb = make_sandbox_no_prom()
    api = OfficialKubeApi.from_config(
        KubernetesConfig(kubeconfig=str(sb.kubeconfig_path), request_timeout_s=0.5), "me"
    )
    try:
        k = Kube(api, Backoff(attempts=2, base_delay_s=0.05, max_delay_s=0.1, deadline_s=2))
        rs = k.observe(sb.namespace, sb.deployment, time.time(), "rlscale.io/paused")
        assert rs.desired == 1 and rs.ready + rs.starting == 1
        res = k.apply(sb.namespace, sb.deployment, 3, 1, rs.resource_version)
        assert res.ok and sb.deployment_object()["spec"]["replicas"] == 3
        stale = k.apply(sb.namespace, sb.deployment, 4, 1, rs.resource_version)
        assert stale.outcome == "ForeignChange"  # 3 is not what the decision was based on
        with pytest.raises(NotFoundError):
            k.observe(sb.namespace, "absent", time.time(), "p")
        assert EventRecorder(api).record(
            sb.namespace, sb.deployment, rs.uid, "SuccessfulRescale", "New size: 3", time.time()
        )
        sb.set_faults(r"/deployments/", error_rate_500=1.0)
        with pytest.raises(TemporaryError, match="500"):
            k.observe(sb.namespace, sb.deployment, time.time(), "p")
        sb.clear_faults()
        sb.set_faults(r"/deployments/", latency_s=1.0)
        t0 = time.monotonic()
        with pytest.raises(TemporaryError, match="unreachable"):
            api.get_deployment(sb.namespace, sb.deployment)
        assert time.monotonic() - t0 < 0.95  # the request timeout, not the server, bounds it
        sb.clear_faults()
        writes = [(r.method, r.path, r.content_type) for r in sb.request_log if r.is_write]
        assert (
            "PATCH",
            f"/apis/apps/v1/namespaces/{sb.namespace}/deployments/{sb.deployment}/scale",
            "application/merge-patch+json",
        ) in writes
        assert all(r.user_agent.startswith("rlscale-controller/me") for r in sb.request_log)
    finally:
        api.close()
