"""The warm pool live against the sandbox (issue 15's Done-when): the controller, with the API
stand-in (real REST, the official client), emulated vLLM pods in sleep mode, and a real
Prometheus, wakes a sleeping replica on a load step (Ready within seconds of emulated time),
puts one back to sleep after the load falls, holds everything while Prometheus is down (no
scale-down, no sleep on missing data), and scales the placeholder Deployment of the warm-node
tier; all within the clamps and with Events.

time_scale 60: a 60 s cold start takes 1 s of wall time, a 3-8 s wake 50-130 ms.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlscale.deploy.config import ControllerConfig, parse_config
from rlscale.deploy.controller import build_controller
from rlscale.sandbox.prometheus import find_binary
from tests.deploy.test_controller_sandbox import (
    HPA,
    LIMITS,
    ReplicaMonitor,
    Running,
    rbac_allows,
    set_load,
    shipped_rules,
    spec_replicas,
)

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.slow,
    pytest.mark.skipif(
        find_binary() is None and __import__("os").environ.get("CI") != "true",
        reason="needs the prometheus binary (apt-get install prometheus)",
    ),
]

NS, DEP, PH = "default", "llm", "vllm-placeholder"
MIN_R, MAX_R, POOL = 1, 6, 1
TIME_SCALE = 60.0


@pytest.fixture(scope="module")
def sb() -> Iterator[Any]:
    from rlscale.sandbox.replay import constant_workload
    from rlscale.sandbox.runner import Sandbox

    sandbox = Sandbox(
        "llama-3.1-8b-h100",
        constant_workload(10.0),
        time_scale=TIME_SCALE,
        replicas=1 + POOL,
        scrape_interval_s=0.5,
        seed=5,
    )
    sandbox.start()
    try:
        sandbox.wait_for_ready(1 + POOL, 20)
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def hpa_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("hpa") / "hpa.yaml"
    p.write_text(yaml.safe_dump(HPA))
    return p


def post(url: str) -> int:
    req = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def pods(sb: Any) -> list[dict[str, Any]]:
    return [p for p in sb.pods() if not (p.get("metadata") or {}).get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def asleep(sb: Any) -> set[str]:
    return {p["metadata"]["name"] for p in sb.sleeping_pods()}


def ready_names(sb: Any) -> set[str]:
    return {p["metadata"]["name"] for p in pods(sb) if is_ready(p)}


def events(sb: Any, reason: str) -> list[dict[str, Any]]:
    from rlscale.sandbox.apiserver.resources import EVENTS

    return sb.call(lambda s: [e for e in s.list(EVENTS, NS) if e.get("reason") == reason])


def config(sb: Any, hpa: Path, standby: dict[str, Any], policy: str) -> ControllerConfig:
    target = {
        "namespace": NS,
        "deployment": DEP,
        "profile": "llama-3.1-8b-h100",
        "policy": policy,
        "fallback": {"rule": "hpa", "options": {"manifest": str(hpa)}},
        "limits": {**LIMITS, "min_replicas": MIN_R, "max_replicas": MAX_R, "max_warm_replicas": 2},
        "metrics": {
            "rate_window": "3s",
            "max_staleness_s": 3,
            "fallback_required": ["requests_waiting", "requests_running"],
        },
        "manual_override_hold_s": 3,
        "starting_guard_s": 30,
        "standby": standby,
    }
    return parse_config(
        {
            "tick_s": 0.5,
            "prometheus": {"url": sb.prometheus_url, "timeout_s": 0.5},
            "kubernetes": {
                "kubeconfig": str(sb.kubeconfig_path),
                "request_timeout_s": 0.8,
                "retry": {
                    "attempts": 3,
                    "base_delay_s": 0.05,
                    "max_delay_s": 0.2,
                    "deadline_s": 1.0,
                },
            },
            "leader_election": {"enabled": False},
            "exporter": {"enabled": False},
            "targets": [target],
        }
    )


def assert_least_privilege(sb: Any, identity: str) -> None:
    """Every API request the controller made is allowed by the shipped Role (kubernetes/rbac.yaml,
    its target renamed to the sandbox's), and none of them writes a pod."""
    rules = shipped_rules({"llama-3-1-8b": DEP})
    ours = [r for r in sb.request_log if r.user_agent.endswith("/" + identity)]
    denied = sorted(
        {(r.method, r.path) for r in ours if not rbac_allows(rules, r.method, r.path, r.query)}
    )
    assert ours and not denied, denied
    assert not [r for r in ours if "/pods" in r.path and r.method != "GET"]


SLEEPING = {
    "tier": "sleeping",
    "port_name": "http",
    "request_timeout_s": 5,
    "probe_timeout_s": 0.5,
    # the sandbox's per-pod gauges are the fleet's mean (pods.py), so no pod reads 0 under load;
    # the drain rule itself (0 by default) is held to in tests/deploy/test_standby_plan.py
    "drain": {"max_requests": 200},
}


def test_a_load_step_wakes_the_sleeper_and_a_fall_puts_one_back_while_an_outage_holds_all(
    sb: Any, hpa_manifest: Path
) -> None:
    set_load(sb, 10.0)
    newest = max(pods(sb), key=lambda p: p["metadata"]["creationTimestamp"])
    assert post(f"{sb.pod_url(newest)}/sleep?level=1") == 200  # the pool as the operator seeds it
    deadline = time.monotonic() + 5
    while len(ready_names(sb)) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert asleep(sb) == {newest["metadata"]["name"]} and len(ready_names(sb)) == 1
    cfg = config(sb, hpa_manifest, SLEEPING, f"hpa:{hpa_manifest}#warm={POOL}")
    sb.clear_request_log()
    controller = build_controller(cfg, identity="standby")
    with ReplicaMonitor(sb) as mon, Running(controller) as run:
        run.wait(lambda: len(run.seen) >= 4, 10, "four ticks at low load")
        assert spec_replicas(sb) == 1 + POOL and len(asleep(sb)) == POOL
        assert controller.targets[0].memory.pool_held == POOL
        assert not any(r.standby and r.standby.woken for r in run.results)

        # the load step: the first scale-up wakes the sleeper, spec = N + W refills the pool
        sleeper = next(iter(asleep(sb)))
        t_step = time.monotonic()
        set_load(sb, 60.0)
        run.wait(
            lambda: any(r.standby and sleeper in r.standby.woken for r in run.since(t_step)),
            15,
            "the sleeper woken",
        )
        woke = next(s for s in run.seen if s.result.standby and sleeper in s.result.standby.woken)
        run.wait(lambda: sleeper in ready_names(sb), 5, "the woken pod Ready")
        # from the wake call to the pod Ready (a cold start: 60-200 s emulated); the controller's
        # own tick before the call (API, Prometheus) is wall time a cold start pays too
        assert woke.result.standby.wake_s is not None
        woke_in_emulated_s = (woke.result.standby.wake_s + time.monotonic() - woke.at) * TIME_SCALE
        wake = woke.result
        assert wake.record.desired is not None and wake.record.desired > 1
        assert (
            wake.record.standby.spec_replicas == wake.record.desired + POOL
        )  # refill: cold starts
        run.wait(lambda: len(asleep(sb)) == POOL, 30, "the pool refilled and a pod put to sleep")
        peak = max(n for _, n in mon.samples)

        # Prometheus down while the load falls: no scale-down, no sleep, the pool held
        spec_before = spec_replicas(sb)
        ready_before = len(ready_names(sb))
        sb.pause_prometheus()
        t_down = time.monotonic()
        try:
            set_load(sb, 5.0)
            time.sleep(2.0)
            run.wait(
                lambda: sum(s.started >= t_down + 1.0 for s in run.seen) >= 3,
                15,
                "ticks during the outage",
            )
            t_up = time.monotonic()
        finally:
            sb.resume_prometheus()
        during = [s.result for s in run.seen if t_down + 1.0 <= s.started and s.at <= t_up]
        assert during and all(r.record.outcome == "Hold" for r in during)
        assert {r.record.reason for r in during} <= {"MetricsUnavailable", "MetricsStale"}
        assert all(r.action != "Scaled" for r in during)
        assert all(not (r.standby and r.standby.slept) for r in during)
        assert all("PoolHeld" in [s.reason for s in r.record.steps] for r in during)
        assert min(mon.between(t_down, t_up)) >= spec_before
        assert len(ready_names(sb)) >= ready_before

        # back: the scale-down, and the pool put back by sleeping a surplus Ready pod
        t_back = time.monotonic()
        run.wait(
            lambda: spec_replicas(sb) == MIN_R + POOL and len(asleep(sb)) == POOL,
            40,
            "serving back at the minimum with the pool asleep",
        )
        slept_after = [n for r in run.since(t_back) if r.standby for n in r.standby.slept]
        assert slept_after, "a pod put back to sleep after the load fell"

    assert not run.errors
    assert woke_in_emulated_s < 30, (
        f"woken Ready {woke_in_emulated_s:.0f} s (emulated) after the step"
    )
    assert peak <= MAX_R + POOL
    for r in run.results:
        rec = r.record
        if rec.desired is not None:
            assert MIN_R <= rec.desired <= MAX_R
        if rec.standby is not None:
            assert 0 <= rec.standby.pool <= POOL
            if rec.standby.spec_replicas is not None:
                assert rec.standby.spec_replicas <= MAX_R + POOL
    assert events(sb, "WakeReplica") and events(sb, "SleepReplica")
    assert all(e["type"] == "Normal" for e in events(sb, "WakeReplica"))
    assert_least_privilege(sb, "standby")


def test_a_failed_wake_is_a_warning_and_the_scale_up_goes_on(sb: Any, hpa_manifest: Path) -> None:
    set_load(sb, 10.0)
    cfg = config(sb, hpa_manifest, SLEEPING, f"hpa:{hpa_manifest}#warm={POOL}")
    controller = build_controller(cfg, identity="standby-fault")
    with Running(controller) as run:
        run.wait(lambda: len(asleep(sb)) == POOL and len(run.seen) >= 3, 30, "a pool asleep")
        sleeper = next(iter(asleep(sb)))
        sb.fail_standby(sleeper, "wake", "error")
        try:
            t_step = time.monotonic()
            set_load(sb, 60.0)
            run.wait(
                lambda: any(r.standby and r.standby.wake_failed for r in run.since(t_step)),
                15,
                "a failed wake",
            )
            run.wait(lambda: spec_replicas(sb) >= 3, 15, "the cold-start scale-up")
        finally:
            sb.fail_standby(sleeper, "wake", None)
        assert run.alive and not run.errors
    warnings = events(sb, "WakeFailed")
    assert warnings and all(e["type"] == "Warning" for e in warnings)
    set_load(sb, 10.0)


def test_the_warm_node_tier_scales_the_placeholder_deployment(sb: Any, hpa_manifest: Path) -> None:
    from rlscale.profiles.model import load_profile
    from rlscale.sandbox.apiserver.resources import DEPLOYMENTS
    from rlscale.sandbox.runner import deployment_manifest

    manifest = deployment_manifest(PH, NS, 0, load_profile("llama-3.1-8b-h100"), sleep_mode=False)
    sb.call(lambda s: s.find(DEPLOYMENTS, NS, PH) or s.create(DEPLOYMENTS, NS, manifest))
    set_load(sb, 10.0)

    def placeholder_replicas() -> int:
        return int(sb.call(lambda s: s.get(DEPLOYMENTS, NS, PH))["spec"]["replicas"])

    standby = {"tier": "warm_node", "placeholder": PH}
    cfg = config(sb, hpa_manifest, standby, f"hpa:{hpa_manifest}#warm=2")
    sb.clear_request_log()
    controller = build_controller(cfg, identity="warm-node")
    with Running(controller) as run:
        run.wait(
            lambda: any(
                r.standby and r.standby.placeholder and r.standby.placeholder.ok
                for r in run.results
            ),
            15,
            "the placeholder scaled through /scale",
        )
        assert placeholder_replicas() == 2
        sb.pause_prometheus()
        t_down = time.monotonic()
        try:
            run.wait(
                lambda: sum(s.started >= t_down + 1.0 for s in run.seen) >= 2,
                15,
                "ticks during the outage",
            )
        finally:
            sb.resume_prometheus()
        during = [s.result for s in run.seen if s.started >= t_down + 1.0]
        assert during and all(r.record.standby.placeholder_replicas is None for r in during)
        assert placeholder_replicas() == 2
    assert not run.errors
    ev = events(sb, "ScalePlaceholder")
    assert ev and "-> 2" in ev[0]["message"]
    assert json.dumps(ev[0]["involvedObject"]).count(DEP) >= 1
    assert_least_privilege(sb, "warm-node")
    scale = [r for r in sb.request_log if r.path.endswith(f"/deployments/{PH}/scale")]
    assert {r.method for r in scale} == {"GET", "PATCH"}
