"""The live controller against the sandbox: the API stand-in (real REST, official client),
emulated vLLM pods that cold-start, and a real Prometheus scraping them.

One sandbox serves the module (time_scale 60: a 60 s cold start takes 1 s); every test sets the
load and the replica count it starts from and stops what it started, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlscale.deploy.config import ControllerConfig, parse_config
from rlscale.deploy.controller import Controller, TickResult, build_controller, make_target
from rlscale.deploy.policies import build_target_policies
from rlscale.policies.base import Decision
from rlscale.sandbox.prometheus import find_binary

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.slow,
    # CI installs Prometheus (scripts/setup.sh): there a missing binary fails the test, never skips
    pytest.mark.skipif(
        find_binary() is None and os.environ.get("CI") != "true",
        reason="needs the prometheus binary (apt-get install prometheus)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
MIN_R, MAX_R = 1, 6
NS, DEP = "default", "llm"
SLO_TTFT_S = 2.0

# The HPA the tests scale with: queue and concurrency per pod (gauges, so the sandbox's time
# scale does not distort them: rates measured in wall seconds are 60x the simulated ones).
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "sandbox-hpa"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEP},
        "minReplicas": MIN_R,
        "maxReplicas": MAX_R,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "request_queue_size"},
                    "target": {"type": "AverageValue", "averageValue": "10"},
                },
            },
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "num_requests_running"},
                    # 30, not 40: the serving model held to the request-level engine runs fewer
                    # requests at once at the same load, and at 40 a 3-replica fleet at the high
                    # load read as over-provisioned (a scale-down before the load dropped)
                    "target": {"type": "AverageValue", "averageValue": "30"},
                },
            },
        ],
    },
}
LIMITS = {
    "min_replicas": MIN_R,
    "max_replicas": MAX_R,
    "scale_up": {
        "stabilization_window_s": 0,
        "policies": [{"type": "Pods", "value": 2, "period_s": 1}],
    },
    "scale_down": {
        "stabilization_window_s": 1.5,
        "policies": [{"type": "Percent", "value": 50, "period_s": 1}],
    },
}
UP_STEP = 2


@pytest.fixture(scope="module")
def sb() -> Iterator[Any]:
    from rlscale.sandbox.replay import constant_workload
    from rlscale.sandbox.runner import Sandbox

    sandbox = Sandbox(
        "llama-3.1-8b-h100",
        constant_workload(10.0),
        time_scale=60,
        replicas=1,
        scrape_interval_s=0.5,
        seed=3,
    )
    sandbox.start()
    try:
        sandbox.wait_for_ready(1, 20)
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def hpa_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("hpa") / "hpa.yaml"
    p.write_text(yaml.safe_dump(HPA))
    return p


def set_load(sb: Any, rps: float) -> None:
    from rlscale.sandbox.replay import WorkloadCursor, constant_workload

    w = constant_workload(rps)
    sb.call(lambda _s: setattr(sb.replay, "cursor", WorkloadCursor(w)))


def set_replicas(sb: Any, n: int) -> None:
    def scale(s: Any) -> None:
        from rlscale.sandbox.apiserver.resources import DEPLOYMENTS

        d = s.get(DEPLOYMENTS, NS, DEP)
        d["spec"]["replicas"] = n
        s.update(DEPLOYMENTS, NS, DEP, d)

    sb.call(scale)
    sb.wait_for_ready(n, 20)


def spec_replicas(sb: Any) -> int:
    return int(sb.deployment_object()["spec"]["replicas"])


def config(sb: Any, hpa: Path, **over: Any) -> ControllerConfig:
    target = {
        "namespace": NS,
        "deployment": DEP,
        "profile": "llama-3.1-8b-h100",
        "policy": {"rule": "hpa", "options": {"manifest": str(hpa)}},
        "fallback": {"rule": "hpa", "options": {"manifest": str(hpa)}},
        "limits": LIMITS,
        "metrics": {
            "rate_window": "3s",
            "max_staleness_s": 3,
            "fallback_required": ["requests_waiting", "requests_running"],
        },
        "manual_override_hold_s": 3,
        "starting_guard_s": 30,
        **over.pop("target", {}),
    }
    data = {
        "tick_s": 0.5,
        "prometheus": {"url": sb.prometheus_url, "timeout_s": 0.5},
        "kubernetes": {
            "kubeconfig": str(sb.kubeconfig_path),
            "request_timeout_s": 0.8,
            "retry": {"attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2, "deadline_s": 1.0},
        },
        "leader_election": {"enabled": False},
        "exporter": {"enabled": False},
        "targets": [target],
        **over,
    }
    return parse_config(data)


@dataclass
class Seen:
    at: float  # when the tick ended
    result: TickResult
    started: float = 0.0


class Running:
    """A controller ticking on a thread, every result recorded; stopped on exit."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        tick = controller.tick

        def recording_tick(now_s: float) -> list[TickResult]:
            started = time.monotonic()
            out = tick(now_s)
            self.seen.extend(Seen(time.monotonic(), r, started) for r in out)
            return out

        controller.tick = recording_tick  # type: ignore[method-assign]
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="controller-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.controller.run(self._stop)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    def __enter__(self) -> Running:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self.controller.close(release=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def results(self) -> list[TickResult]:
        return [s.result for s in self.seen]

    def since(self, t: float) -> list[TickResult]:
        return [s.result for s in self.seen if s.at >= t]

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                tail = [
                    (
                        r.action,
                        r.record.reason,
                        r.record.current,
                        r.record.desired,
                        r.record.missing,
                    )
                    for r in self.since(deadline - timeout_s)
                ][-6:]
                raise AssertionError(f"timed out waiting for {what}; last decisions: {tail}")
            assert self.alive, f"the controller thread died: {self.errors}"
            time.sleep(0.05)


class ReplicaMonitor:
    """Samples spec.replicas of the Deployment every 50 ms on a thread."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(Exception):
                self.samples.append((time.monotonic(), spec_replicas(self.sb)))

    def __enter__(self) -> ReplicaMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, t0: float, t1: float) -> list[int]:
        return [n for t, n in self.samples if t0 <= t <= t1]


def ttft(r: TickResult) -> float | None:
    m = r.record.metrics
    return m.ttft_p95_s if m is not None and r.record.outcome != "Hold" else None


def test_a_load_step_scales_up_recovers_ttft_and_scales_back_down(
    sb: Any, hpa_manifest: Path
) -> None:
    set_load(sb, 10.0)
    set_replicas(sb, 1)
    cfg = config(sb, hpa_manifest)
    controller = build_controller(cfg, identity="load-step")
    with ReplicaMonitor(sb) as mon, Running(controller) as run:
        run.wait(lambda: len(run.seen) >= 3, 10, "three ticks at low load")
        assert spec_replicas(sb) == 1
        t_step = time.monotonic()
        set_load(sb, 60.0)
        run.wait(
            lambda: any((ttft(r) or 0) > SLO_TTFT_S for r in run.since(t_step)),
            10,
            "TTFT above the SLO",
        )
        run.wait(lambda: spec_replicas(sb) >= 3, 15, "a scale-up")
        run.wait(
            lambda: any(
                r.record.replicas is not None and r.record.replicas.starting > 0
                for r in run.since(t_step)
            ),
            5,
            "pods cold-starting",
        )
        t_up = time.monotonic()

        def recovered() -> bool:
            late = [ttft(r) for r in run.since(t_up)]
            return any(x is not None and x < SLO_TTFT_S for x in late)

        run.wait(recovered, 20, "TTFT back under the SLO at the high load")
        peak = spec_replicas(sb)
        t_drop = time.monotonic()
        set_load(sb, 10.0)
        run.wait(lambda: spec_replicas(sb) == MIN_R, 20, "a scale-down after the load dropped")
        t_end = time.monotonic()

    assert not run.errors
    assert 3 <= peak <= MAX_R
    counts = [n for _, n in mon.samples]
    assert counts and all(MIN_R <= n <= MAX_R for n in counts)
    for r in run.seen:
        rec = r.result.record
        if rec.desired is not None:
            assert MIN_R <= rec.desired <= MAX_R
        if r.result.action == "Scaled":
            assert rec.desired - rec.current <= UP_STEP  # the Pods policy: +2 per period
    # No scale-up to a count the pods still starting already cover. Issue 12 item 12: the
    # proposal is compared with ready + starting; before, every scale-up was held while any pod
    # started (this test asserted that WaitingForStartingReplicas had held one).
    for x in run.seen:
        rec, rs = x.result.record, x.result.record.replicas
        if x.result.action == "Scaled" and rs is not None and rs.starting > 0:
            if rec.desired is not None and rec.current is not None and rec.desired > rec.current:
                assert rec.proposed is not None and rec.proposed > rs.ready + rs.starting
    # Down only after the load dropped.
    downs = [
        s
        for s in run.seen
        if s.result.action == "Scaled" and s.result.record.desired < s.result.record.current
    ]
    assert downs and all(s.at >= t_drop for s in downs)
    assert t_end - t_drop < 20
    from rlscale.sandbox.apiserver.resources import EVENTS

    events = sb.call(
        lambda s: [e for e in s.list(EVENTS, NS) if e.get("reason") == "SuccessfulRescale"]
    )
    assert len(events) >= 2 and all("New size:" in e["message"] for e in events)


class Flaky:
    """Wraps a policy; raises while `broken` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = "flaky-hpa"
        self.broken = threading.Event()

    def reset(self) -> None:
        pass

    def decide(self, window: Any) -> Decision:
        if self.broken.is_set():
            raise RuntimeError("policy bug")
        return self.inner.decide(window)


def test_faults_never_push_it_out_of_bounds_nor_down_on_missing_data_and_it_recovers(
    sb: Any, hpa_manifest: Path
) -> None:
    set_load(sb, 30.0)
    set_replicas(sb, 2)
    sb.clear_faults()
    cfg = config(sb, hpa_manifest)
    pol = build_target_policies(cfg.targets[0])
    flaky = Flaky(pol.primary.policy)
    pol.primary.policy = flaky
    offset = {"s": 0.0}
    controller = build_controller(
        cfg,
        identity="faults",
        targets=[make_target(cfg, cfg.targets[0], pol)],
        clock=lambda: time.time() + offset["s"],
    )
    prom_pid = sb.prometheus_pid
    phases: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def phase(name: str, seconds: float) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
            time.sleep(seconds)
        finally:
            phases[name] = (t0, time.monotonic())

    with ReplicaMonitor(sb) as mon, Running(controller) as run:
        run.wait(
            lambda: any(r.record.reason == "PolicyProposal" for r in run.results),
            10,
            "a first decision",
        )

        with phase("api down", 1.0):
            sb.set_faults(r"/apis/apps/v1/namespaces/default/deployments", error_rate_500=1.0)
        sb.clear_faults()
        with phase("api flaky", 1.0):
            sb.set_faults(
                r"/apis/apps/v1/namespaces/default/deployments",
                error_rate_500=0.3,
                error_rate_429=0.3,
            )
            sb.set_faults(r"/api/v1/namespaces/default/pods", error_rate_429=0.3, drop_rate=0.2)
        sb.clear_faults()
        with phase("api timeouts", 2.0):
            sb.set_faults(r"/apis/apps/v1/namespaces/default/deployments", latency_s=1.2)
        sb.clear_faults()

        # 409s: another writer changes the Deployment (an annotation, not the replicas) between
        # the controller's read and its write, every tick, while the load asks for a scale-up.
        def touch(store: Any) -> None:
            from rlscale.sandbox.apiserver.resources import DEPLOYMENTS

            d = store.get(DEPLOYMENTS, NS, DEP)
            d["metadata"].setdefault("annotations", {})["neighbour"] = str(time.monotonic())
            store.update(DEPLOYMENTS, NS, DEP, d)

        observe = controller.kube.observe
        racing = threading.Event()

        def observe_then_race(*a: Any, **kw: Any) -> Any:
            state = observe(*a, **kw)
            if racing.is_set():
                sb.call(touch)
            return state

        controller.kube.observe = observe_then_race  # type: ignore[method-assign]
        try:
            with phase("conflicts", 0.0):
                racing.set()
                t_race = time.monotonic()
                run.wait(lambda: len(run.since(t_race)) >= 2, 10, "ticks racing the other writer")
                t_load = time.monotonic()
                set_load(sb, 60.0)
                run.wait(
                    lambda: any(r.action == "Scaled" for r in run.since(t_load)),
                    15,
                    "a scale-up through the conflicts",
                )
        finally:
            racing.clear()
        scaled = [r for r in run.since(t_load) if r.action == "Scaled"]
        assert (
            scaled[0].apply is not None and scaled[0].apply.attempts >= 2
        )  # 409, re-read, retried
        conflicts = [
            r
            for r in sb.request_log
            if r.path.endswith("/scale") and r.method == "PATCH" and r.status == 409
        ]
        assert conflicts, "no 409 on the scale write"

        with phase("policy raises", 1.0):
            flaky.broken.set()
        flaky.broken.clear()

        set_load(
            sb, 10.0
        )  # from here on the load asks for a scale-down: missing data must not give it
        with phase("prometheus stopped", 1.8):
            os.kill(prom_pid, signal.SIGSTOP)
        os.kill(prom_pid, signal.SIGCONT)
        with phase("stale series", 1.0):
            offset["s"] = 30.0  # the newest samples are 30 s older than the controller's now
        offset["s"] = 0.0

        def nan_gauges(step: Any) -> None:
            """After each replay step, the serving pods export NaN for vllm:num_requests_waiting."""
            from rlscale.sandbox.apiserver.resources import PODS
            from rlscale.sandbox.kubelet import serving

            live = {p["metadata"]["name"] for p in sb.store.list(PODS, NS) if serving(p)}
            for ep in sb.fleet.endpoints.values():
                if ep.metrics is not None and ep.pod_key is not None and ep.pod_key[1] in live:
                    ep.metrics.waiting = float("nan")

        with phase("nan series", 1.5):
            sb.call(lambda _s: sb.replay.on_step.append(nan_gauges))
        sb.call(lambda _s: sb.replay.on_step.remove(nan_gauges))

        t_clear = time.monotonic()
        run.wait(
            lambda: any(
                r.record.source == "primary" and not r.record.missing and r.record.outcome != "Hold"
                for r in run.since(t_clear)
            ),
            15,
            "trusted decisions by the primary policy again",
        )
        run.wait(lambda: spec_replicas(sb) < MAX_R, 20, "a scale-down once the data is back")

    assert run.alive is False and not run.errors
    counts = [n for _, n in mon.samples]
    assert counts and all(MIN_R <= n <= MAX_R for n in counts)

    def during(name: str) -> list[TickResult]:
        """The ticks that started while the fault was on."""
        t0, t1 = phases[name]
        return [s.result for s in run.seen if t0 <= s.started <= t1]

    reasons = {name: {r.record.reason for r in during(name)} for name in phases}
    assert all(during(name) for name in phases), reasons  # it kept ticking through every fault
    assert "ReplicaStateUnavailable" in reasons["api down"], reasons
    assert not any(r.action == "Scaled" for r in during("api down")[:-1]), reasons
    assert "ReplicaStateUnavailable" in reasons["api timeouts"], reasons
    assert "MetricsUnavailable" in reasons["prometheus stopped"], reasons
    assert "MetricsStale" in reasons["stale series"], reasons
    assert "MetricsMissing" in reasons["nan series"], reasons
    assert any(r.record.fallback_cause == "PolicyError" for r in during("policy raises")), reasons
    for name in ("prometheus stopped", "stale series", "nan series"):
        t0, t1 = phases[name]
        seen = mon.between(
            t0 + 0.6, t1
        )  # after the last tick that could have started before the fault
        assert all(b >= a for a, b in zip(seen, seen[1:], strict=False)), (
            f"scaled down during {name}: {seen}"
        )
        for r in during(name):
            assert not (
                r.action == "Scaled"
                and r.record.desired < r.record.current
                and r.record.source != "primary"
            ), name


def test_dry_run_sends_no_write_request(sb: Any, hpa_manifest: Path) -> None:
    set_load(sb, 60.0)
    set_replicas(sb, 1)
    sb.clear_faults()
    sb.clear_request_log()
    cfg = config(sb, hpa_manifest, dry_run=True, events=False)
    with Running(build_controller(cfg, identity="dry-strict")) as run:
        run.wait(
            lambda: sum(r.action == "DryRun" for r in run.results) >= 3,
            15,
            "three dry-run decisions",
        )
    assert sb.writes() == []
    assert spec_replicas(sb) == 1
    assert all(r.result.record.desired > 1 for r in run.seen if r.result.action == "DryRun")

    sb.clear_request_log()
    cfg = config(
        sb,
        hpa_manifest,
        dry_run=True,
        events=True,
        leader_election={
            "enabled": True,
            "lease_name": "dry-run",
            "lease_duration_s": 3,
            "renew_deadline_s": 2,
            "retry_period_s": 0.5,
        },
    )
    with Running(build_controller(cfg, identity="dry-events")) as run:
        run.wait(
            lambda: sum(r.action == "DryRun" for r in run.results) >= 2,
            15,
            "dry-run decisions with events",
        )
    writes = sb.writes()
    assert writes and all("/deployments" not in w.path for w in writes)
    assert {
        (w.method, w.path.rsplit("/", 1)[-1] if "leases/" in w.path else w.path.rsplit("/", 1)[-1])
        for w in writes
    } <= {("POST", "events"), ("POST", "leases"), ("PUT", "dry-run")}
    assert spec_replicas(sb) == 1


def shipped_rules(names: dict[str, str]) -> list[dict[str, Any]]:
    """The shipped Role's rules (kubernetes/rbac.yaml), its `resourceNames` renamed to the
    test's objects (`names`: shipped name -> the test's; a name not in it is kept)."""
    role = next(
        d
        for d in yaml.safe_load_all((REPO / "kubernetes" / "rbac.yaml").read_text())
        if d["kind"] == "Role"
    )
    return [
        {**r, "resourceNames": [names.get(n, n) for n in r["resourceNames"]]}
        if r.get("resourceNames")
        else r
        for r in role["rules"]
    ]


def rbac_allows(rules: list[dict[str, Any]], method: str, path: str, query: str) -> bool:
    """Whether the Role's rules allow this request (resource, subresource, verb, name)."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    assert rest[0] == "namespaces", path
    resource, name, sub = (
        rest[2],
        (rest[3] if len(rest) > 3 else None),
        (rest[4] if len(rest) > 4 else None),
    )
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "get" if name else ("watch" if "watch=true" in query else "list")
    full = f"{resource}/{sub}" if sub else resource
    return any(
        group in r["apiGroups"]
        and full in r["resources"]
        and verb in r["verbs"]
        and (not r.get("resourceNames") or name in r["resourceNames"] or verb == "create")
        for r in rules
    )


def test_two_controller_processes_exactly_one_writes(
    sb: Any, hpa_manifest: Path, tmp_path: Path
) -> None:
    set_load(sb, 10.0)
    set_replicas(sb, 1)
    sb.clear_faults()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    # Seconds, not the default 15 s; long enough that a CPU-starved leader on a busy test machine
    # does not lose the Lease mid-test (a clean handover there would be correct, but not this test).
    lease = {
        "enabled": True,
        "lease_name": "two-controllers",
        "lease_duration_s": 4,
        "renew_deadline_s": 3,
        "retry_period_s": 0.5,
    }

    def start(identity: str) -> None:
        cfg = config(
            sb,
            hpa_manifest,
            identity=identity,
            leader_election=lease,
            exporter={"enabled": True, "address": "127.0.0.1", "port": 0},
        ).model_dump(mode="json")
        path = tmp_path / f"{identity}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log = (tmp_path / f"{identity}.log").open("wb")
        procs[identity] = subprocess.Popen(
            [sys.executable, "-m", "rlscale.cli", "control", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def holder() -> str | None:
        from rlscale.sandbox.apiserver.resources import LEASES

        obj = sb.call(lambda s: s.find(LEASES, NS, "two-controllers"))
        return (obj or {}).get("spec", {}).get("holderIdentity")

    def leader_gauge(identity: str) -> float:
        """rlscale_leader from the process's own metrics endpoint (its port is in its start-up log)."""
        import json
        import urllib.request

        started = next(
            json.loads(line)
            for line in (tmp_path / f"{identity}.log").read_text().splitlines()
            if '"controller started"' in line
        )
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{started['metrics_port']}/metrics", timeout=5)
            .read()
            .decode()
        )
        return float(
            next(
                line.split()[1] for line in body.splitlines() if line.startswith("rlscale_leader ")
            )
        )

    def wait(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                logs = {k: (tmp_path / f"{k}.log").read_text()[-1500:] for k in procs}
                raise AssertionError(f"timed out waiting for {what}; logs: {logs}")
            time.sleep(0.05)

    try:
        sb.clear_request_log()
        start("ctl-a")
        start("ctl-b")
        wait(lambda: holder() in ("ctl-a", "ctl-b"), 15, "a leader")
        set_load(sb, 60.0)
        wait(lambda: spec_replicas(sb) >= 3, 20, "scale-ups by the leader")
        leader = holder()
        other = "ctl-b" if leader == "ctl-a" else "ctl-a"
        scale_writes = [
            r
            for r in sb.request_log
            if r.path.endswith(f"/deployments/{DEP}/scale") and r.method == "PATCH"
        ]
        assert scale_writes and {r.user_agent.rsplit("/", 1)[-1] for r in scale_writes} == {leader}
        other_writes = [r for r in sb.writes() if r.user_agent.endswith("/" + other)]
        assert all(
            "/leases" in r.path for r in other_writes
        )  # the standby only tries for the Lease
        assert leader_gauge(leader) == 1.0 and leader_gauge(other) == 0.0

        procs[leader].send_signal(signal.SIGTERM)
        assert procs[leader].wait(15) == 0  # graceful: finishes its tick, releases the Lease
        wait(lambda: holder() == other, 10, "the standby to take over")

        # Everything both controllers asked for is allowed by the shipped least-privilege Role
        # (its Lease name is the shipped one there; here the test's).
        rules = shipped_rules({"rlscale-controller": "two-controllers", "llama-3-1-8b": DEP})
        ours = [r for r in sb.request_log if r.user_agent.rsplit("/", 1)[-1] in procs]
        assert ours and all(rbac_allows(rules, r.method, r.path, r.query) for r in ours), sorted(
            {(r.method, r.path) for r in ours if not rbac_allows(rules, r.method, r.path, r.query)}
        )
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def test_percentiles_computed_from_buckets_match_prometheus(sb: Any) -> None:
    from rlscale.deploy import promql
    from rlscale.deploy.config import PrometheusConfig, TargetConfig
    from rlscale.deploy.metrics import PrometheusHttp, prepare

    set_load(sb, 30.0)
    q = prepare(TargetConfig(namespace=NS, deployment=DEP, metrics={"rate_window": "5s"}))
    http = PrometheusHttp(PrometheusConfig(url=sb.prometheus_url))
    try:
        # A few scrapes back: a scrape stamped before `now` may still land between two queries.
        deadline = time.monotonic() + 20
        while True:
            now = time.time() - 3.0
            rates = {h: http.query(expr, now) for h, (expr, _) in q.histograms.items()}
            if all(any(v > 0 for _, v in r) for r in rates.values()):
                break
            assert time.monotonic() < deadline, f"no observations in the histograms: {rates}"
            time.sleep(0.5)
        for hist, (expr, quantiles) in q.histograms.items():
            buckets = [(float(labels["le"]), v) for labels, v in rates[hist]]
            for field, quantile in quantiles.items():
                ((_, theirs),) = http.query(f"histogram_quantile({quantile}, {expr})", now)
                ours = promql.histogram_quantile(quantile, buckets)
                assert ours == pytest.approx(theirs, rel=1e-9), field
    finally:
        http.close()
