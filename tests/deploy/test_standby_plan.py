"""The warm pool live (`standby:`): the plan each tick (wake on a scale-up, refill, sleep the
surplus, drain first, nothing on a hold), its actuation (vLLM sleep API over HTTP, the
placeholder's /scale), and the faults it survives. Timelines with an explicit clock, a fake API
server and a fake vLLM fleet whose ReplicaSet deletes not-ready pods first."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from rlscale.contract import IntervalMetrics
from rlscale.deploy.kube import PodAddress
from rlscale.deploy.retry import TemporaryError
from rlscale.deploy.standby import HttpSleepApi, StandbyError, requests_in_flight
from rlscale.policies.base import Decision
from rlscale.safety import SafetyLimits
from tests.deploy.fakes import T0, FakeKube, ScriptedPolicy, controller_config, iso

NS, DEP, PH = "llm", "llama", "vllm-placeholder"
FAST = {"stabilization_window_s": 0, "policies": [{"type": "Pods", "value": 4, "period_s": 1}]}


def limits(**over: Any) -> SafetyLimits:
    data: dict[str, Any] = dict(
        min_replicas=1, max_replicas=10, max_warm_replicas=2, scale_up=FAST, scale_down=FAST
    )
    data.update(over)
    return SafetyLimits.model_validate(data)


def pool_policy(serving: Sequence[int] | int, warm: int = 2) -> ScriptedPolicy:
    """Proposes `serving` (a constant, or one value per call) with a pool of `warm`."""
    seq = [serving] if isinstance(serving, int) else list(serving)

    def fn(w: Sequence[IntervalMetrics]) -> Decision:
        n = seq.pop(0) if len(seq) > 1 else seq[0]
        return Decision(n, f"scripted -> {n}", warm)

    return ScriptedPolicy(fn, "pool")


class Fleet:
    """The target's pods as vLLM servers (a `SleepApi`), written into a FakeKube as pods with
    IPs and a port named `http`; `reconcile()` is the ReplicaSet (not-ready pods deleted first on
    a spec decrease, new pods created starting on an increase), `finish_starts()` the cold start."""

    def __init__(self, kube: FakeKube, serving: int, asleep: int) -> None:
        self.kube = kube
        self.state: dict[str, str] = {}  # name -> serving | asleep | starting
        self.load: dict[str, float] = {}
        self.fail_wake: set[str] = set()
        self.fail_sleep: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self._n = 0
        for _ in range(serving):
            self._add("serving")
        for _ in range(asleep):
            self._add("asleep")
        kube.deployments[(NS, DEP)]["spec"]["replicas"] = serving + asleep
        self.sync()

    def _add(self, state: str) -> str:
        name = f"{DEP}-rs-{self._n:03d}"
        self._n += 1
        self.state[name] = state
        self.load[name] = 0.0
        return name

    def named(self, state: str) -> list[str]:
        return sorted(n for n, s in self.state.items() if s == state)

    def sync(self) -> None:
        pods = []
        for i, (name, st) in enumerate(sorted(self.state.items())):
            pods.append(
                {
                    "metadata": {
                        "name": name,
                        "labels": {"app": DEP},
                        "creationTimestamp": iso(T0 - 3600 + i),
                    },
                    "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000}]}]},
                    "status": {
                        "phase": "Running",
                        "podIP": f"10.0.0.{i + 1}",
                        "conditions": [
                            {"type": "Ready", "status": "True" if st == "serving" else "False"}
                        ],
                    },
                }
            )
        self.kube.pods[(NS, DEP)] = pods

    def reconcile(self) -> None:
        spec = self.kube.replicas(NS, DEP)
        while len(self.state) < spec:
            self._add("starting")
        while len(self.state) > spec:
            # the ReplicaSet's order: not-ready pods before ready ones
            victim = (self.named("starting") or self.named("asleep") or self.named("serving"))[-1]
            del self.state[victim]
        self.sync()

    def finish_starts(self) -> None:
        for n in self.named("starting"):
            self.state[n] = "serving"
        self.sync()

    # -- SleepApi ------------------------------------------------------------------------------
    def is_sleeping(self, pod: PodAddress) -> bool:
        if self.state.get(pod.name) == "starting":
            raise StandbyError(f"{pod.name}: connection refused")
        return self.state.get(pod.name) == "asleep"

    def wake_up(self, pod: PodAddress) -> None:
        self.calls.append(("wake_up", pod.name))
        if pod.name in self.fail_wake:
            raise StandbyError(f"POST /wake_up on {pod.name}: HTTP 500")
        self.state[pod.name] = "serving"
        self.sync()

    def sleep(self, pod: PodAddress) -> None:
        self.calls.append(("sleep", pod.name))
        if pod.name in self.fail_sleep:
            raise StandbyError(f"POST /sleep on {pod.name}: ReadTimeoutError")
        self.state[pod.name] = "asleep"
        self.sync()

    def requests_in_flight(self, pod: PodAddress) -> float:
        return self.load[pod.name]

    def posts(self) -> list[tuple[str, str]]:
        return list(self.calls)


def sleeping_config(**over: Any) -> Any:
    target = {
        "namespace": NS,
        "deployment": DEP,
        "standby": {"tier": "sleeping"},
        **over.pop("target", {}),
    }
    return controller_config(targets=[target], **over)


@pytest.fixture
def fleet_harness(make_harness: Any) -> Any:
    def make(
        policy: Any, serving: int = 2, asleep: int = 2, lim: SafetyLimits | None = None, **cfg: Any
    ) -> tuple[Any, Fleet]:
        kube = FakeKube()
        kube.add_deployment(NS, DEP, serving + asleep)
        fleet = Fleet(kube, serving, asleep)
        h = make_harness(
            policy,
            limits=lim or limits(),
            config=sleeping_config(**cfg),
            kube=kube,
            sleep_api=fleet,
        )
        return h, fleet

    return make


def steps(result: Any) -> list[str]:
    return [s.reason for s in result.record.steps]


def events(h: Any, reason: str) -> list[dict[str, Any]]:
    return [e for e in h.kube.events if e["reason"] == reason]


def test_a_scale_up_wakes_sleeping_pods_first_and_refills_the_pool_with_cold_starts(
    fleet_harness: Any,
) -> None:
    h, fleet = fleet_harness(pool_policy(4))
    (r,) = h.tick(T0)
    assert r.record.current == 2 and r.record.desired == 4  # serving: spec 4 less the pool 2
    assert r.action == "Scaled" and h.kube.replicas(NS, DEP) == 6  # N + W
    assert len(r.standby.woken) == 2
    assert len(fleet.named("serving")) == 4 and not fleet.named("asleep")  # seconds, not minutes
    assert "WakeReplica" in steps(r) and events(h, "WakeReplica")
    fleet.reconcile()  # the ReplicaSet creates the two refill pods
    (r,) = h.tick(T0 + 15)
    assert r.record.replicas.starting == 2 and not r.standby.slept
    fleet.finish_starts()
    (r,) = h.tick(T0 + 30)
    assert len(r.standby.slept) == 2 and "SleepReplica" in steps(r)
    assert len(fleet.named("serving")) == 4 and len(fleet.named("asleep")) == 2
    assert h.kube.replicas(NS, DEP) == 6
    (r,) = h.tick(T0 + 45)
    assert r.record.outcome == "NoChange" and not r.record.standby.wake
    assert r.record.standby.sleep_count == 0 and r.record.standby.pool_observed == 2


def test_a_scale_down_loses_a_sleeping_pod_to_the_replicaset_and_the_pool_is_put_back(
    fleet_harness: Any,
) -> None:
    h, fleet = fleet_harness(pool_policy(2), serving=3, asleep=2)
    (r,) = h.tick(T0)  # no scale-down on the first tick: the clamp's memory is new
    assert r.record.desired == 3 and "NoScaleDownAfterStart" in steps(r)
    (r,) = h.tick(T0 + 15)
    assert r.action == "Scaled" and h.kube.replicas(NS, DEP) == 4
    fleet.reconcile()  # 5 -> 4: the ReplicaSet deletes a not-ready pod, a sleeping one
    assert len(fleet.named("asleep")) == 1 and len(fleet.named("serving")) == 3
    (r,) = h.tick(T0 + 30)
    assert "SleepReplica" in steps(r) and len(r.standby.slept) == 1
    assert len(fleet.named("serving")) == 2 and len(fleet.named("asleep")) == 2
    assert h.kube.replicas(NS, DEP) == 4


def refilled(h: Any) -> None:
    """As after a refill: the controller holds a pool of 2, one refill pod has become Ready."""
    h.controller.targets[0].memory.pool_held = 2


def test_a_busy_pod_is_not_put_to_sleep_until_it_drains(fleet_harness: Any) -> None:
    h, fleet = fleet_harness(pool_policy(2), serving=3, asleep=1)
    refilled(h)
    newest, older, oldest = fleet.named("serving")[::-1]
    fleet.load.update({newest: 3.0, older: 5.0, oldest: 7.0})
    (r,) = h.tick(T0)
    plan = r.record.standby
    assert plan.sleep_count == 1 and not plan.sleep and "SleepDeferred" in steps(r)
    assert not fleet.posts() and len(events(h, "SleepDeferred")) == 1
    (r,) = h.tick(T0 + 15)  # still busy: deferred again, one Event for the whole deferral
    assert "SleepDeferred" in steps(r) and len(events(h, "SleepDeferred")) == 1
    fleet.load[older] = 0.0  # the idle pod goes first, not the newest busy one
    (r,) = h.tick(T0 + 30)
    assert r.standby.slept == (older,) and fleet.state[older] == "asleep"


def test_missing_metrics_never_sleep_nor_shrink_the_pool_but_a_short_serving_is_woken(
    fleet_harness: Any,
) -> None:
    h, fleet = fleet_harness(pool_policy(3), serving=3, asleep=2)
    h.tick(T0)
    h.prom.error = TemporaryError("Prometheus unreachable: connection refused")
    fleet.state[fleet.named("serving")[0]] = "starting"  # a serving pod restarts meanwhile
    fleet.sync()
    (r,) = h.tick(T0 + 15)
    assert r.record.outcome == "Hold" and r.record.reason == "MetricsUnavailable"
    assert "PoolHeld" in steps(r) and r.record.standby.pool == 2
    assert len(r.standby.woken) == 1 and h.kube.replicas(NS, DEP) == 5
    fleet.finish_starts()  # now 4 Ready > 3 serving and the pool short by one
    (r,) = h.tick(T0 + 30)
    assert r.record.outcome == "Hold" and r.record.standby.sleep_count == 0
    assert (
        not h.kube.writes("patch_scale")
        and ("sleep", fleet.named("serving")[0]) not in fleet.posts()
    )
    assert all(op == "wake_up" for op, _ in fleet.posts())


def test_the_kill_switch_leaves_the_pool_alone(fleet_harness: Any) -> None:
    h, fleet = fleet_harness(pool_policy(4))
    h.kube.set_annotation(NS, DEP, "rlscale.io/paused", "true")
    (r,) = h.tick(T0)
    assert r.record.reason == "Paused" and not r.record.standby.wake and not fleet.posts()


def test_dry_run_computes_the_plan_and_makes_no_call_that_changes_anything(
    fleet_harness: Any,
) -> None:
    h, fleet = fleet_harness(pool_policy(4), dry_run=True)
    (r,) = h.tick(T0)
    assert r.action == "DryRun" and len(r.record.standby.wake) == 2
    assert not fleet.posts() and not h.kube.writes("patch_scale")
    assert events(h, "DryRunStandby") and "nothing done" in events(h, "DryRunStandby")[0]["message"]


def test_a_pod_that_fails_to_wake_is_reported_and_another_is_woken_next_tick(
    fleet_harness: Any,
) -> None:
    h, fleet = fleet_harness(pool_policy(3))
    first = sorted(fleet.named("asleep"))[0]
    fleet.fail_wake.add(first)
    (r,) = h.tick(T0)
    assert r.standby.wake_failed and r.standby.wake_failed[0][0] == first
    assert "WakeFailed" in steps(r)
    warn = events(h, "WakeFailed")
    assert warn and warn[0]["type"] == "Warning" and "HTTP 500" in warn[0]["message"]
    m = h.controller.metrics.registry.get_sample_value(
        "rlscale_standby_actions_total",
        {"namespace": NS, "deployment": DEP, "action": "wake", "result": "failed"},
    )
    assert m == 1
    (r,) = h.tick(T0 + 15)
    assert r.standby.woken and r.standby.woken[0] != first
    assert len(fleet.named("serving")) == 3


def test_a_pod_that_fails_to_sleep_is_reported_and_the_loop_goes_on(fleet_harness: Any) -> None:
    h, fleet = fleet_harness(pool_policy(2), serving=3, asleep=1)
    refilled(h)
    fleet.fail_sleep.update(fleet.named("serving"))
    (r,) = h.tick(T0)
    assert r.standby.sleep_failed and "SleepFailed" in steps(r)
    assert events(h, "SleepFailed")[0]["type"] == "Warning"
    fleet.fail_sleep.clear()
    (r,) = h.tick(T0 + 15)
    assert len(r.standby.slept) == 1 and len(fleet.named("asleep")) == 2


def test_the_pool_is_clamped_by_max_warm_replicas_and_the_gpu_budget(fleet_harness: Any) -> None:
    h, _ = fleet_harness(pool_policy(4, warm=5), lim=limits(max_gpus=5))
    (r,) = h.tick(T0)
    plan = r.record.standby
    # the pool held (2) counts against the budget in the clamp, as in the simulator: N 4 -> 3
    assert plan.serving == 3 and "GPUBudget" in steps(r)
    assert plan.pool == 2 and "PoolClamped" in steps(r)  # 5 -> max_warm_replicas 2
    assert h.kube.replicas(NS, DEP) == 5  # N + W within max_gpus / gpus_per_replica


def test_a_restart_takes_the_pool_from_the_pods_observed_asleep(fleet_harness: Any) -> None:
    h, fleet = fleet_harness(pool_policy(3, warm=None), serving=3, asleep=1)
    (r,) = h.tick(T0)
    assert h.controller.targets[0].memory.pool_held == 1
    assert r.record.current == 3 and r.record.outcome == "NoChange"
    assert r.record.standby.pool == 1  # a policy without a pool size keeps the pool held
    sample = h.controller.metrics.registry.get_sample_value(
        "rlscale_warm_replicas", {"namespace": NS, "deployment": DEP}
    )
    assert sample == 1


def test_a_pool_change_alone_moves_spec_replicas(fleet_harness: Any) -> None:
    h, fleet = fleet_harness(pool_policy(2, warm=1), serving=2, asleep=2)
    (r,) = h.tick(T0)
    assert r.record.outcome == "NoChange" and "PoolShrink" in steps(r)
    assert r.action == "Scaled" and h.kube.replicas(NS, DEP) == 3
    (r,) = h.tick(T0 + 15)  # its own write is no manual change
    assert "ExternalChange" not in steps(r) and r.record.current == 2


def test_the_warm_node_tier_scales_the_placeholder_through_its_scale_subresource(
    make_harness: Any,
) -> None:
    kube = FakeKube()
    kube.add_deployment(NS, DEP, 2)
    kube.add_deployment(NS, PH, 0)
    cfg = controller_config(
        targets=[
            {
                "namespace": NS,
                "deployment": DEP,
                "standby": {"tier": "warm_node", "placeholder": PH},
            }
        ]
    )
    h = make_harness(pool_policy(3), limits=limits(), config=cfg, kube=kube)
    (r,) = h.tick(T0)
    assert r.action == "Scaled" and kube.replicas(NS, DEP) == 3  # spec = N on node tiers
    assert kube.replicas(NS, PH) == 2 and r.standby.placeholder.ok
    body = [w.body for w in kube.writes("patch_scale") if w.name == PH][0]
    assert body["metadata"]["resourceVersion"]  # conditional, as the target's own write
    assert "ScalePlaceholder" in steps(r) and events(h, "ScalePlaceholder")
    h.prom.error = TemporaryError("Prometheus unreachable")
    kube.scale_by_someone_else(NS, PH, 1)  # a shrink the hold must not repeat nor undo
    (r,) = h.tick(T0 + 15)
    assert r.record.outcome == "Hold" and r.record.standby.placeholder_replicas is None
    assert kube.replicas(NS, PH) == 1


def test_an_unreadable_placeholder_is_a_step_and_the_target_still_scales(
    make_harness: Any,
) -> None:
    kube = FakeKube()
    kube.add_deployment(NS, DEP, 2)
    cfg = controller_config(
        targets=[
            {
                "namespace": NS,
                "deployment": DEP,
                "standby": {"tier": "warm_node", "placeholder": PH},
            }
        ]
    )
    h = make_harness(pool_policy(3), limits=limits(), config=cfg, kube=kube)
    (r,) = h.tick(T0)
    assert "PlaceholderUnavailable" in steps(r) and kube.replicas(NS, DEP) == 3


# -- the HTTP client against a real server ------------------------------------------------------


class _Vllm(http.server.BaseHTTPRequestHandler):
    asleep = False
    status = 200

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/is_sleeping":
            self._send(200, json.dumps({"is_sleeping": type(self).asleep}).encode())
        elif self.path == "/metrics":
            self._send(
                200,
                b'vllm:num_requests_running{model_name="m"} 2.0\n'
                b'vllm:num_requests_waiting{model_name="m"} 1.0\n',
            )
        else:
            self._send(404, b"")

    def do_POST(self) -> None:  # noqa: N802
        if type(self).status != 200:
            self._send(type(self).status, b"")
            return
        if self.path.startswith("/sleep"):
            type(self).asleep = True
        elif self.path == "/wake_up":
            type(self).asleep = False
        self._send(200, b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def vllm() -> Iterator[PodAddress]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Vllm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Vllm.asleep, _Vllm.status = False, 200
    try:
        yield PodAddress("pod-0", "127.0.0.1", server.server_address[1], True, 0.0)
    finally:
        server.shutdown()
        server.server_close()


def test_the_http_client_sleeps_wakes_and_reads_a_real_server(vllm: PodAddress) -> None:
    api = HttpSleepApi(request_timeout_s=2, probe_timeout_s=1)
    assert api.is_sleeping(vllm) is False
    api.sleep(vllm)
    assert api.is_sleeping(vllm) is True
    api.wake_up(vllm)
    assert api.is_sleeping(vllm) is False
    assert api.requests_in_flight(vllm) == 3.0
    _Vllm.status = 503
    with pytest.raises(StandbyError, match="HTTP 503"):
        api.wake_up(vllm)
    api.close()


def test_the_http_client_times_out_and_reports_an_unreachable_pod() -> None:
    api = HttpSleepApi(request_timeout_s=0.2, probe_timeout_s=0.2)
    with pytest.raises(StandbyError, match="pod-x"):
        api.is_sleeping(PodAddress("pod-x", "127.0.0.1", 9, True, 0.0))  # discard port: refused
    with pytest.raises(StandbyError, match="no IP"):
        api.wake_up(PodAddress("pod-y", "", 8000, False, 0.0))


def test_a_metrics_page_without_the_gauge_is_no_proof_of_idleness() -> None:
    with pytest.raises(StandbyError, match="num_requests_running"):
        requests_in_flight("# nothing here\n")
    assert requests_in_flight("vllm_num_requests_running 0\n") == 0.0
