"""Issue 12 (sandbox): 409 storms and lost answers as faults, from Python, the CLI grammar and an
HTTP endpoint; pod endpoints synced one at a time; background tasks that die are reported;
wedged engines; aborts counted; an initial fleet that serves its workload."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from rlscale.sandbox.runner import Sandbox
from tests.sandbox.test_apiserver_client import DEPLOY, NS, raw
from tests.sandbox.test_pods_metrics import Snap

FAULTS = "/rlscale-sandbox/v1/faults"


def spec_replicas(sb: Sandbox) -> int:
    return int(sb.deployment_object()["spec"]["replicas"])


# --- faults -------------------------------------------------------------------------------------


def test_a_409_storm_answers_conflict_and_changes_nothing(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    sandbox.set_faults(r"/scale$", error_rate_409=1.0, methods=("PATCH",))
    apps = k8s.AppsV1Api(api)
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment_scale(DEPLOY, NS, {"spec": {"replicas": 3}})
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    assert spec_replicas(sandbox) == 1
    assert apps.read_namespaced_deployment_scale(DEPLOY, NS).spec.replicas == 1  # GETs pass


def test_a_lost_answer_lands_the_write_and_closes_the_connection(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    import urllib3

    sandbox.set_faults(r"/scale$", lose_rate=1.0, methods=("PATCH",))
    with pytest.raises(urllib3.exceptions.HTTPError):
        k8s.AppsV1Api(api).patch_namespaced_deployment_scale(DEPLOY, NS, {"spec": {"replicas": 3}})
    assert spec_replicas(sandbox) == 3  # it landed
    lost = [r for r in sandbox.request_log if r.method == "PATCH" and r.path.endswith("/scale")]
    assert lost and lost[-1].status is None


def test_faults_over_http_are_added_listed_and_cleared(sandbox: Sandbox) -> None:
    code, _, body = raw(sandbox, "POST", FAULTS, {"spec": "/scale$@PATCH:error_rate_409=1"})
    assert code == 201 and json.loads(body)["error_rate_409"] == 1.0
    code, _, body = raw(
        sandbox, "POST", FAULTS, {"path_regex": "/pods", "lose_rate": 0.5, "methods": ["get"]}
    )
    assert code == 201
    rules = json.loads(raw(sandbox, "GET", FAULTS)[2])["rules"]
    assert [(r["path_regex"], r["methods"]) for r in rules] == [
        ("/scale$", ["PATCH"]),
        ("/pods", ["GET"]),
    ]
    patch = f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}/scale"
    assert (
        raw(
            sandbox,
            "PATCH",
            patch,
            {"spec": {"replicas": 2}},
            content_type="application/merge-patch+json",
        )[0]
        == 409
    )
    assert raw(sandbox, "DELETE", FAULTS)[0] == 200 and sandbox.faults.rules == []
    code, _, body = raw(sandbox, "POST", FAULTS, {"spec": "/x:nonsense=1"})
    assert code == 400 and b"nonsense" in body


def test_the_fault_grammar_names_what_it_expects() -> None:
    from rlscale.sandbox.apiserver.faults import FaultRule

    rule = FaultRule.parse("/scale$@PATCH,put:lose_rate=0.25,latency_s=0.1,retry_after_s=2")
    assert (rule.path_regex, rule.methods, rule.lose_rate, rule.latency_s, rule.retry_after_s) == (
        "/scale$",
        ("PATCH", "PUT"),
        0.25,
        0.1,
        2,
    )
    for bad in ("no-colon", ":lose_rate=1", "/x:lose_rate", "/x:lose_rate=2"):
        with pytest.raises(ValueError):
            FaultRule.parse(bad)


# --- the fleet ----------------------------------------------------------------------------------


def test_pod_endpoint_syncs_run_one_at_a_time(sandbox: Sandbox) -> None:
    """The replay and the pod follower both call sync(); run together, one stopped an endpoint
    the other was starting and the replay task died (AttributeError ... pre_shutdown)."""
    fleet = sandbox.fleet
    assert fleet is not None
    inside = {"now": 0, "most": 0}

    async def slow_sync() -> None:
        inside["now"] += 1
        inside["most"] = max(inside["most"], inside["now"])
        await asyncio.sleep(0.02)
        inside["now"] -= 1

    async def many() -> None:
        real = fleet._sync
        fleet._sync = slow_sync  # type: ignore[method-assign]
        try:
            await asyncio.gather(*(fleet.sync() for _ in range(5)))
        finally:
            fleet._sync = real  # type: ignore[method-assign]

    assert sandbox._loop is not None
    sandbox._loop.run(many())
    assert inside["most"] == 1


def test_a_background_task_that_dies_is_logged(
    make_sandbox: Callable[..., Sandbox], caplog: pytest.LogCaptureFixture
) -> None:
    sb = make_sandbox(replicas=1)
    assert sb.replay is not None

    def broken() -> Any:
        raise AttributeError("'NoneType' object has no attribute 'pre_shutdown'")

    with caplog.at_level(logging.ERROR, logger="rlscale.sandbox"):
        sb.call(lambda _s: setattr(sb.replay, "step", broken))
        sb.wait_for(lambda: bool(sb.task_errors), timeout_s=20)
        sb.wait_for(lambda: "sandbox task replay died" in caplog.text, timeout_s=5)
    (name, error), *_ = sb.task_errors
    assert name == "replay" and isinstance(error, AttributeError)


def test_a_frozen_pod_keeps_its_values() -> None:
    from rlscale.sandbox.pods import PodMetrics

    m = PodMetrics("m")
    m.apply(Snap(), 1.0, 256.0)
    before = (m.running, m.generation_tokens, m.request_success)
    m.frozen = True
    m.apply(Snap(requests_running=5.0), 1.0, 256.0)
    m.idle()
    assert (m.running, m.generation_tokens, m.request_success) == before


def test_freeze_pods_wedges_every_pod_of_the_sandbox(make_sandbox: Callable[..., Sandbox]) -> None:
    from tests.sandbox.test_pods_metrics import sample, scrape

    sb = make_sandbox(replicas=2)
    sb.wait_for_ready(2, timeout_s=20)
    assert sb.freeze_pods() == 2
    urls = list(sb.pod_metrics_urls().values())
    first = [sample(scrape(u)[0], "vllm:generation_tokens_total") for u in urls]
    sb.wait_for(lambda: sb.last_step is not None and sb.last_step.time_s > 0, timeout_s=5)
    step = sb.last_step.time_s  # type: ignore[union-attr]
    sb.wait_for(lambda: sb.last_step.time_s > step + 30, timeout_s=10)  # type: ignore[union-attr]
    assert [sample(scrape(u)[0], "vllm:generation_tokens_total") for u in urls] == first
    sb.freeze_pods(False)
    sb.wait_for(
        lambda: [sample(scrape(u)[0], "vllm:generation_tokens_total") for u in urls] != first,
        timeout_s=10,
    )


def test_clients_that_give_up_are_counted_as_aborts() -> None:
    from rlscale.sandbox.pods import PodMetrics, render
    from tests.sandbox.test_pods_metrics import sample

    m = PodMetrics("m")
    m.apply(Snap(completed=10.0, dropped=30.0), 0.5, 256.0)
    text = render(m, None, "colon")[0].decode()
    assert sample(text, "vllm:request_success_total", finished_reason="stop") == 5.0
    assert sample(text, "vllm:request_success_total", finished_reason="abort") == 15.0
    quiet = PodMetrics("m", count_aborts=False)  # as vLLM 0.13 (vLLM #31503)
    quiet.apply(Snap(completed=10.0, dropped=30.0), 0.5, 256.0)
    text = render(quiet, None, "colon")[0].decode()
    assert sample(text, "vllm:request_success_total", finished_reason="abort") == 0.0


def test_the_default_fleet_serves_the_default_workload_at_start() -> None:
    import numpy as np

    from rlscale.profiles.model import load_profile
    from rlscale.sandbox.replay import replicas_for
    from rlscale.serving.capacity import slo_capacity_rps
    from rlscale.traces.synthetic import default_workload

    profile = load_profile("llama-3.1-8b-h100")
    w = default_workload(0)
    n = replicas_for(w, profile)
    minutes = w.arrivals[:600].reshape(10, 60).sum(axis=1) / 60.0  # 1 s bins
    sizes = (
        np.average(w.prompt_tokens[:600], weights=w.arrivals[:600]),
        np.average(w.output_tokens[:600], weights=w.arrivals[:600]),
    )
    capacity = slo_capacity_rps(profile, float(sizes[0]), float(sizes[1]))
    assert minutes.max() <= 0.7 * capacity * n
    assert n > 1  # the 1 replica it used to start with is overloaded at once


def test_a_bad_fault_flag_names_what_it_expects() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlscale.cli",
            "sandbox",
            "--no-prometheus",
            "--duration-s",
            "0.5",
            "--fault",
            "/x@GET:bogus=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--fault" in out.stderr and "bogus" in out.stderr, out.stderr
