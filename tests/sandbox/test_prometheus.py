"""A real Prometheus scraping the emulated pods, and the end-to-end path the live controller uses:
scale through the scale subresource, pods cold-start, the waiting-requests query follows the
replayed load. One Prometheus serves the session; each test's sandbox has its own namespace."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from rlscale.profiles.model import ServiceProfile
from rlscale.sandbox.prometheus import PrometheusProcess, config, scalar
from rlscale.sandbox.replay import constant_workload
from rlscale.sandbox.runner import Sandbox

pytestmark = pytest.mark.prometheus


def value(result: list[dict[str, Any]]) -> float:
    v = scalar(result)
    return float("nan") if v is None else v


def test_config_scrapes_file_sd_targets_and_relabels_vllm_names(tmp_path: Any) -> None:
    cfg = config(tmp_path, scrape_interval_s=0.5, relabel_vllm_names=True, raw_job=True)
    main, raw = cfg["scrape_configs"]
    assert main["file_sd_configs"][0]["files"] == [str(tmp_path / "*.json")]
    assert main["scrape_interval"] == main["scrape_timeout"] == "500ms"
    assert main["metric_relabel_configs"][0]["replacement"] == "vllm:$1"
    assert raw["job_name"] == "vllm-raw" and "metric_relabel_configs" not in raw


@pytest.fixture(scope="module")
def labelled(prometheus: PrometheusProcess, tiny_profile: ServiceProfile) -> Iterator[Sandbox]:
    sb = Sandbox(
        tiny_profile,
        constant_workload(5.0),
        namespace="prom-labels",
        replicas=2,
        time_scale=30,
        prometheus=prometheus,
    )
    try:
        sb.start()
        sb.wait_for_ready(2, timeout_s=10)
        yield sb
    finally:
        sb.stop()


def test_prometheus_scrapes_each_ready_pod_with_pod_namespace_and_model_name_labels(
    labelled: Sandbox,
) -> None:
    result = labelled.wait_for_query(
        'vllm:num_requests_running{namespace="prom-labels",job="vllm"}',
        lambda r: len(r) == 2,
        timeout_s=15,
    )
    pods = sorted(p["metadata"]["name"] for p in labelled.pods())
    assert sorted(r["metric"]["pod"] for r in result) == pods
    assert {r["metric"]["model_name"] for r in result} == {"test/tiny-llm"}
    assert {r["metric"]["container"] for r in result} == {"vllm"}
    gpu = labelled.wait_for_query(
        'DCGM_FI_DEV_GPU_UTIL{namespace="prom-labels",job="vllm"}', lambda r: len(r) == 2
    )
    assert sorted(r["metric"]["pod"] for r in gpu) == pods and {
        r["metric"]["gpu"] for r in gpu
    } == {"0"}
    up = labelled.query('up{namespace="prom-labels",job="vllm"}')
    assert [r["value"][1] for r in up] == ["1", "1"]
    buckets = labelled.wait_for_query(
        'sum by (le) (vllm:time_to_first_token_seconds_bucket{namespace="prom-labels",job="vllm"})',
        lambda r: len(r) == 23,
    )
    assert {r["metric"]["le"] for r in buckets} >= {"0.1", "2560.0", "+Inf"}


def test_prometheus_negotiates_openmetrics_and_the_relabel_rule_restores_the_vllm_colon_names(
    labelled: Sandbox,
) -> None:
    # Without the rule (job vllm-raw) the pods' OpenMetrics answer is stored as vllm_*.
    raw = labelled.wait_for_query(
        'vllm_num_requests_waiting{namespace="prom-labels",job="vllm-raw"}', lambda r: len(r) == 2
    )
    assert len(raw) == 2
    assert labelled.query('vllm:num_requests_waiting{namespace="prom-labels",job="vllm-raw"}') == []
    # With it (job vllm) only the colon spelling exists.
    assert len(labelled.query('vllm:num_requests_waiting{namespace="prom-labels",job="vllm"}')) == 2
    assert labelled.query('vllm_num_requests_waiting{namespace="prom-labels",job="vllm"}') == []
    # A query tolerant of both spellings finds the series either way.
    tolerant = '{__name__=~"vllm[:_]num_requests_waiting",namespace="prom-labels"}'
    assert len(labelled.query(tolerant)) == 4


def test_scaling_through_the_scale_subresource_brings_pods_ready_after_their_cold_start_and_drains_the_queue(
    prometheus: PrometheusProcess,
    tiny_profile: ServiceProfile,
    make_sandbox: Callable[..., Sandbox],
    client_for: Callable[[Sandbox], k8s.ApiClient],
) -> None:
    ns, time_scale = "prom-e2e", 30.0
    capacity = tiny_profile.capacity_rps()
    sb = make_sandbox(
        namespace=ns,
        replicas=1,
        time_scale=time_scale,
        prometheus=prometheus,
        workload=constant_workload(1.5 * capacity),
    )
    api = client_for(sb)
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    waiting = f'sum(vllm:num_requests_waiting{{namespace="{ns}",job="vllm"}})'
    ready_targets = f'count(up{{namespace="{ns}",job="vllm"}} == 1)'

    # One replica against 1.5 times its capacity: the queue Prometheus sees grows.
    sb.wait_for_ready(1, timeout_s=10)
    first = value(sb.wait_for_query(waiting, lambda r: value(r) > 0, timeout_s=15))
    second = value(sb.wait_for_query(waiting, lambda r: value(r) > first * 1.05, timeout_s=10))
    assert second > first > 0

    # Follow the pods from here on: when is each new one first seen Ready?
    rv = core.list_namespaced_pod(ns).metadata.resource_version
    became_ready: dict[str, float] = {}
    w = k8s_watch.Watch()

    def follow() -> None:
        for e in w.stream(core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=20):
            name = e["object"].metadata.name
            conditions = e["object"].status.conditions or []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                became_ready.setdefault(name, time.monotonic())
            if len(became_ready) >= 3:
                w.stop()

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    sb.clear_request_log()
    scale = apps.patch_namespaced_deployment_scale(sb.deployment, ns, {"spec": {"replicas": 4}})
    scaled_at = time.monotonic()
    assert scale.spec.replicas == 4
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in sb.writes()] == [("PATCH", "scale")]

    # The new pods exist at once but are not Ready, and Prometheus still scrapes one target.
    pods = core.list_namespaced_pod(ns).items
    not_ready = [
        p
        for p in pods
        if not any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    assert len(pods) == 4 and len(not_ready) == 3
    assert {p.status.phase for p in not_ready} <= {"Pending", "Running"}
    assert value(sb.query(ready_targets)) == 1

    sb.wait_for_ready(4, timeout_s=15)
    watcher.join(20)
    new = {p.metadata.name for p in not_ready}
    assert set(became_ready) == new
    # Delays on our side only make a pod look Ready later, so this bound cannot flake.
    min_cold_start_real_s = min(s.low_s for s in tiny_profile.cold_start) / time_scale
    for name in new:
        assert became_ready[name] - scaled_at >= 0.9 * min_cold_start_real_s

    # Four replicas serve 1.5 times the capacity of one: Prometheus sees all four, the queue drains.
    sb.wait_for_query(ready_targets, lambda r: value(r) == 4, timeout_s=10)
    peak = max(second, value(sb.query(waiting)))
    sb.wait_for_query(waiting, lambda r: value(r) < 0.01 * peak, timeout_s=20)

    # Scaling down: the terminating pods drain what they hold, still scraped (as a PodMonitor
    # scrapes them), and leave the targets once removed.
    apps.patch_namespaced_deployment_scale(sb.deployment, ns, {"spec": {"replicas": 1}})
    sb.wait_for_query(ready_targets, lambda r: value(r) == 1, timeout_s=10)
