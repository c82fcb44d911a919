"""vLLM sleep mode on the emulated pods: `POST /sleep?level=1`, `POST /wake_up`,
`GET /is_sleeping` on the pod's `http` port; a sleeping pod is not Ready, gets no load, stays
scraped, and goes first on a scale-down; a fault knob for wakes and sleeps that fail."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from rlscale.profiles.model import ServiceProfile
from rlscale.sandbox.apiserver.resources import PODS
from rlscale.sandbox.kubelet import EngineUnavailable, is_ready, is_terminating
from rlscale.sandbox.replay import constant_workload
from rlscale.sandbox.runner import Sandbox
from tests.sandbox.test_kubelet import NS, pods, scale, setup


def http(method: str, url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def is_sleeping(sb: Sandbox, name: str) -> bool:
    code, body = http("GET", f"{sb.pod_url(name)}/is_sleeping")
    assert code == 200
    return bool(json.loads(body)["is_sleeping"])


def ready(sb: Sandbox, name: str) -> bool:
    return is_ready(sb.call(lambda s: s.get(PODS, sb.namespace, name)))


# --- the engine state in the kubelet, on a hand-stepped clock ---------------------------------


def started(profile: ServiceProfile, replicas: int = 2):  # type: ignore[no-untyped-def]
    store, ctl, clock = setup(profile, replicas)
    ctl.tick()
    clock.advance(max(t.ready_at_s for t in ctl.timelines.values()) + 0.1)
    ctl.tick()
    assert all(is_ready(p) for p in pods(store))
    return store, ctl, clock


def test_a_sleeping_pod_is_not_ready_until_its_wake_has_taken_the_drawn_time(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = started(tiny_profile, 1)
    (pod,) = pods(store)
    name = pod["metadata"]["name"]
    ctl.sleep_pod(NS, name)
    assert not is_ready(store.get(PODS, NS, name)) and ctl.is_sleeping(NS, name)
    clock.advance(600)
    ctl.tick()
    assert not is_ready(store.get(PODS, NS, name))  # asleep stays asleep
    ctl.sleep_pod(NS, name)  # idempotent

    now = clock.now_s()
    done_at = ctl.wake_pod(NS, name)
    t = ctl.timelines[pod["metadata"]["uid"]]
    assert t.wake_s is not None and 3.0 <= t.wake_s <= 8.0  # the profile's warm_wake
    assert done_at == pytest.approx(now + t.wake_s)
    assert ctl.wake_pod(NS, name) == done_at  # a second wake joins the first
    assert ctl.tick() == pytest.approx(t.wake_s)  # the wake is the next transition due
    clock.advance(t.wake_s - 0.01)
    ctl.tick()
    assert ctl.is_sleeping(NS, name) and not is_ready(store.get(PODS, NS, name))
    clock.advance(0.02)
    ctl.tick()
    assert not ctl.is_sleeping(NS, name) and is_ready(store.get(PODS, NS, name))
    assert ctl.wake_pod(NS, name) == clock.now_s()  # awake: done now


def test_sleep_and_wake_are_refused_while_starting_and_when_terminating(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = setup(tiny_profile, 1)
    ctl.tick()
    (pod,) = pods(store)
    with pytest.raises(EngineUnavailable, match="starting"):
        ctl.sleep_pod(NS, pod["metadata"]["name"])
    clock.advance(60)
    ctl.tick()
    store.delete(PODS, NS, pod["metadata"]["name"])
    with pytest.raises(EngineUnavailable, match="terminating"):
        ctl.wake_pod(NS, pod["metadata"]["name"])
    with pytest.raises(EngineUnavailable, match="not running"):
        ctl.sleep_pod(NS, "no-such-pod")


def test_a_scale_down_deletes_the_sleeping_pod_before_the_ready_ones(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, clock = started(tiny_profile, 3)
    oldest = min(pods(store), key=lambda p: ctl.timelines[p["metadata"]["uid"]].created_s)
    ctl.sleep_pod(NS, oldest["metadata"]["name"])  # the oldest: newest-first would keep it
    scale(store, 2)
    ctl.tick()
    gone = [p["metadata"]["name"] for p in pods(store) if is_terminating(p)]
    assert gone == [oldest["metadata"]["name"]]


# --- the HTTP endpoints on a running sandbox --------------------------------------------------


def test_sleep_takes_the_pod_out_of_service_and_wake_brings_it_back_after_the_wake_time(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sb = make_sandbox(replicas=2, workload=constant_workload(20.0), replay_period_s=0.05)
    sb.wait_for_ready(2, timeout_s=10)
    a, b = (p["metadata"]["name"] for p in sb.pods())
    assert sb.pod_url(a).startswith("http://127.0.0.1:") and not is_sleeping(sb, a)
    sb.wait_for(lambda: sb.last_step is not None and sb.last_step.ready_replicas == 2, 5)

    assert http("POST", f"{sb.pod_url(a)}/sleep?level=1") == (200, b"")
    assert is_sleeping(sb, a) and not ready(sb, a)
    assert [p["metadata"]["name"] for p in sb.sleeping_pods()] == [a]
    sb.wait_for(lambda: sb.last_step is not None and sb.last_step.ready_replicas == 1, 5)
    # still a scrape target and still answering /metrics, with nothing in it
    sb.wait_for(lambda: any(t["labels"]["pod"] == a for t in sb.fleet.targets), 5)  # type: ignore[union-attr]
    metrics = sb.call(lambda _s: sb.fleet.metrics_of(sb.namespace, a))  # type: ignore[union-attr]
    assert metrics is not None and metrics.running == 0 and metrics.waiting == 0
    code, text = http("GET", f"{sb.pod_url(a)}/metrics")
    assert code == 200 and b"vllm:num_requests_running" in text
    assert http("POST", f"{sb.pod_url(a)}/sleep?level=1") == (200, b"")  # idempotent

    t0 = sb.clock.now_s()
    assert http("POST", f"{sb.pod_url(a)}/wake_up") == (200, b"")
    waited_s = sb.clock.now_s() - t0
    wake_s = sb.call(
        lambda s: sb.controller.timelines[s.get(PODS, NS, a)["metadata"]["uid"]].wake_s
    )  # type: ignore[union-attr]
    assert 3.0 <= wake_s <= 8.0 and waited_s >= wake_s - 1e-6
    assert waited_s < wake_s + 3.0  # 3 simulated s = 50 ms of slack at time_scale 60
    assert not is_sleeping(sb, a) and ready(sb, a) and sb.sleeping_pods() == []
    sb.wait_for(lambda: sb.last_step is not None and sb.last_step.ready_replicas == 2, 5)
    t0 = time.monotonic()
    assert http("POST", f"{sb.pod_url(a)}/wake_up") == (200, b"")  # awake: at once
    assert time.monotonic() - t0 < 0.5
    assert ready(sb, b)


def test_failed_and_hanging_standby_calls_change_nothing_until_cleared(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sb = make_sandbox(replicas=1)
    sb.wait_for_ready(1, timeout_s=10)
    (a,) = (p["metadata"]["name"] for p in sb.pods())
    sb.fail_standby(a, "sleep", "error")
    code, body = http("POST", f"{sb.pod_url(a)}/sleep?level=1")
    assert code == 500 and "fail_standby" in json.loads(body)["detail"]
    assert not is_sleeping(sb, a) and ready(sb, a)
    sb.fail_standby(a, "sleep", None)
    assert http("POST", f"{sb.pod_url(a)}/sleep")[0] == 200

    sb.fail_standby(a, "wake", "hang")
    with pytest.raises(TimeoutError):
        http("POST", f"{sb.pod_url(a)}/wake_up", timeout_s=0.3)
    sb.fail_standby(a, "wake", "error")
    assert http("POST", f"{sb.pod_url(a)}/wake_up")[0] == 500
    assert is_sleeping(sb, a) and not ready(sb, a)
    sb.fail_standby(a, "wake", None)
    assert http("POST", f"{sb.pod_url(a)}/wake_up")[0] == 200 and ready(sb, a)
    with pytest.raises(ValueError, match="action"):
        sb.fail_standby(a, "nap", "error")  # type: ignore[arg-type]


def test_a_terminating_pod_answers_503_and_the_sleeping_pod_goes_first(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sb = make_sandbox(replicas=2, termination_grace_s=600)
    sb.wait_for_ready(2, timeout_s=10)
    oldest = sb.pods()[0]["metadata"]["name"]
    url = sb.pod_url(oldest)
    assert http("POST", f"{url}/sleep?level=1")[0] == 200
    sb.call(lambda s: s.patch(*_scale_args(sb, 1)))
    sb.wait_for(lambda: any(is_terminating(p) for p in sb.pods()), 5)
    assert [p["metadata"]["name"] for p in sb.pods() if is_terminating(p)] == [oldest]
    code, body = http("POST", f"{url}/wake_up")
    assert code == 503 and "terminating" in json.loads(body)["detail"]
    assert http("POST", f"{url}/sleep?level=1")[0] == 503


def _scale_args(sb: Sandbox, replicas: int):  # type: ignore[no-untyped-def]
    from rlscale.sandbox.apiserver.resources import DEPLOYMENTS

    return (
        DEPLOYMENTS,
        sb.namespace,
        sb.deployment,
        "application/merge-patch+json",
        {"spec": {"replicas": replicas}},
    )


def test_without_dev_mode_the_sleep_endpoints_do_not_exist(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sb = make_sandbox(replicas=1, sleep_mode=False)
    sb.wait_for_ready(1, timeout_s=10)
    (a,) = (p["metadata"]["name"] for p in sb.pods())
    assert http("POST", f"{sb.pod_url(a)}/sleep?level=1")[0] == 404
    assert http("GET", f"{sb.pod_url(a)}/is_sleeping")[0] == 404


@pytest.mark.prometheus
def test_real_prometheus_keeps_scraping_a_sleeping_pod(
    make_sandbox: Callable[..., Sandbox], prometheus: object
) -> None:
    sb = make_sandbox(replicas=2, namespace="sleep-scrape", prometheus=prometheus)
    sb.wait_for_ready(2, timeout_s=10)
    a = sb.pods()[0]["metadata"]["name"]
    assert http("POST", f"{sb.pod_url(a)}/sleep?level=1")[0] == 200
    t_slept = time.time()
    # a sample scraped after the sleep: the target is still up, its gauges read 0
    result = sb.wait_for_query(
        f'timestamp(up{{namespace="sleep-scrape",pod="{a}",job="vllm"}}) > {t_slept + 0.5}',
        lambda r: len(r) == 1,
        timeout_s=10,
    )
    assert result
    up = sb.query(f'up{{namespace="sleep-scrape",pod="{a}",job="vllm"}}')
    assert up[0]["value"][1] == "1"
    running = sb.wait_for_query(
        f'vllm:num_requests_running{{namespace="sleep-scrape",pod="{a}",job="vllm"}}',
        lambda r: len(r) == 1,
        timeout_s=10,
    )
    assert running[0]["value"][1] == "0"


def test_a_pod_deletion_cost_orders_the_ready_pods_as_the_replicaset_controller_does(
    tiny_profile: ServiceProfile,
) -> None:
    store, ctl, _clock = started(tiny_profile, 3)
    newest = max(pods(store), key=lambda p: ctl.timelines[p["metadata"]["uid"]].created_s)
    keep = newest["metadata"]["name"]

    def cost(pod: dict) -> None:  # type: ignore[type-arg]
        pod["metadata"].setdefault("annotations", {})[
            "controller.kubernetes.io/pod-deletion-cost"
        ] = "100"

    store.mutate(PODS, NS, keep, cost, subresource=None)
    scale(store, 2)
    ctl.tick()
    gone = [p["metadata"]["name"] for p in pods(store) if is_terminating(p)]
    assert len(gone) == 1 and gone != [keep]  # newest-first would have taken it
