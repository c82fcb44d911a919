"""The whole sandbox in one process: stand-in API server, simulated controllers, emulated pods,
workload replay and a real Prometheus. Used by `rlscale sandbox` and by tests.

For warm-pool tests: the pods run vLLM's sleep mode (`sleep_mode=True`, their server on the
container port named `vllm_port_name`, see pods.py; `pod_url`, `sleeping_pods`, `fail_standby`),
and `nodes=NodePool(...)` adds GPU nodes, a cluster-autoscaler, node caches and placeholder pods
(`create_placeholder`, `placeholder_pods`, `nodes`; see nodes.py). Without `nodes` every pod
binds at once and draws the profile's whole cold start, as before.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.sandbox.apiserver.faults import FaultInjector, FaultRule
from rlscale.sandbox.apiserver.resources import DEPLOYMENTS, PODS, Obj
from rlscale.sandbox.apiserver.server import ApiServer, RequestLog, RequestRecord
from rlscale.sandbox.apiserver.store import Store
from rlscale.sandbox.kubelet import ClusterController, ScaledClock, is_terminating, serving
from rlscale.sandbox.loop import LoopThread, wait_any
from rlscale.sandbox.nodes import NodePool, placeholder_manifest
from rlscale.sandbox.pods import PodFleet, Spelling, StandbyAction, StandbyFault
from rlscale.sandbox.prometheus import PrometheusProcess
from rlscale.sandbox.prometheus import wait_for as prom_wait_for
from rlscale.sandbox.replay import (
    Replay,
    ReplayStep,
    ServingModelLike,
    constant_workload,
    default_serving_model,
)
from rlscale.traces.workload import Workload

T = TypeVar("T")
log = logging.getLogger("rlscale.sandbox")

DEFAULT_TOKEN = "rlscale-sandbox-token"


# Readiness for a sleep-mode server: vLLM's /health stays 200 while the engine sleeps, so the
# probe reads /is_sleeping (exit 1 while asleep, or when the server does not answer).
SLEEP_AWARE_PROBE = [
    "python3",
    "-c",
    "import json,sys,urllib.request as u;"
    "sys.exit(json.load(u.urlopen('http://127.0.0.1:8000/is_sleeping',timeout=2))['is_sleeping'])",
]


def deployment_manifest(
    name: str,
    namespace: str,
    replicas: int,
    profile: ServiceProfile,
    termination_grace_s: int = 30,
    *,
    sleep_mode: bool = True,
    port_name: str = "http",
) -> Obj:
    """The Deployment of an LLM server as the sandbox creates it (a vLLM pod per replica).

    `sleep_mode`: the server runs with `--enable-sleep-mode` and VLLM_SERVER_DEV_MODE=1 (its
    /sleep, /wake_up and /is_sleeping exist) and its readiness probe reads /is_sleeping."""
    labels = {"app": name}
    args = ["--model", profile.model, "--port", "8000"]
    container: dict[str, Any] = {
        "name": "vllm",
        "image": "vllm/vllm-openai:latest",
        "args": [*args, "--enable-sleep-mode"] if sleep_mode else args,
        "ports": [{"name": port_name, "containerPort": 8000, "protocol": "TCP"}],
        "readinessProbe": (
            {"exec": {"command": SLEEP_AWARE_PROBE}, "periodSeconds": 5}
            if sleep_mode
            else {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5}
        ),
        "resources": {"limits": {"nvidia.com/gpu": str(profile.gpus_per_replica)}},
    }
    if sleep_mode:
        container["env"] = [{"name": "VLLM_SERVER_DEV_MODE", "value": "1"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, "app.kubernetes.io/name": "vllm"},
            "annotations": {"rlscale.io/profile": profile.name},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace_s,
                    "containers": [container],
                },
            },
        },
    }


def kubeconfig(api_url: str, token: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "rlscale-sandbox", "cluster": {"server": api_url}}],
        "users": [{"name": "rlscale-sandbox", "user": {"token": token}}],
        "contexts": [
            {
                "name": "rlscale-sandbox",
                "context": {
                    "cluster": "rlscale-sandbox",
                    "user": "rlscale-sandbox",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "rlscale-sandbox",
    }


class Sandbox:
    """A local emulated cluster for tests and `rlscale sandbox`.

    Usage::

        with Sandbox(profile, workload, replicas=1, time_scale=60) as sb:
            kubernetes.config.load_kube_config(str(sb.kubeconfig_path))
            apps = kubernetes.client.AppsV1Api()
            apps.patch_namespaced_deployment_scale(sb.deployment, sb.namespace, {"spec": {"replicas": 3}})
            sb.wait_for_ready(3, timeout_s=30)
            sb.wait_for_query("sum(vllm:num_requests_waiting)", lambda r: r != [])

    Constructor (keywords after `workload`):
        profile             ServiceProfile, or a shipped profile name / YAML path.
        workload            rlscale.traces.Workload replayed against the Ready pods (looped);
                            default: a constant 2 req/s of the profile's typical request size.
        namespace, deployment, replicas
                            the Deployment created at start (default `default/llm`, 1 replica).
        time_scale          simulated seconds per wall second (60: a 60 s cold start takes 1 s);
                            applies to cold starts, termination grace and the replay.
        seed                cold-start draws, generated names, fault draws.
        prometheus          True: start a real Prometheus (needs the binary: `prometheus_binary`,
                            $RLSCALE_PROMETHEUS, PATH or /usr/bin/prometheus); False: none; a
                            started PrometheusProcess: share it (this sandbox adds its own
                            file_sd file and removes it at stop; it does not stop the process).
        scrape_interval_s   Prometheus scrape interval (default 1 s).
        relabel_vllm_names  rename `vllm_*` back to `vllm:*` in Prometheus (default True).
        metric_spelling     "negotiated" (like vLLM: `vllm_` under OpenMetrics), "colon", "underscore".
        token               bearer token in the kubeconfig; a request with another token gets 401.
        allow_anonymous     let requests without a token through (default True: kubectl sends
                            no token to an http server; see apiserver/server.py).
        history_limit       change events kept for watches; older resourceVersions get 410.
        pending_share       share of a pod's cold start spent Pending (rest: Running, not Ready).
        model_factory       ServiceProfile -> serving model (default rlscale.serving.model.ServingModel).
        workdir             where kubeconfig, Prometheus config/TSDB/log go (default: a temp
                            directory removed at stop).
        kubeconfig_out      also write the kubeconfig there.
        count_aborts        the pods count client aborts in request_success_total (default True;
                            False: as vLLM releases that do not, vLLM issue #31503).
        termination_grace_s the pods' terminationGracePeriodSeconds (simulated, default 30): how
                            long a deleted pod drains the requests it holds, still scraped,
                            before it goes with the rest (see `replay`).
        sleep_mode          the pods run vLLM's sleep mode (default True): `--enable-sleep-mode`,
                            VLLM_SERVER_DEV_MODE=1, a readiness probe on /is_sleeping; their
                            servers answer POST /sleep, POST /wake_up, GET /is_sleeping (pods.py).
        vllm_port_name      the name of the container port of each pod's vLLM server (default
                            "http"): a client finds it at `status.podIP` (127.0.0.1) + that port.
        nodes               a `NodePool` (rlscale.sandbox.nodes): GPU nodes, the scheduler's fit
                            and preemption, a cluster-autoscaler, node-local image/weight caches,
                            placeholder pods. None (default): one node, every pod binds at once.

    After `start()` (or entering the `with`):
        api_url, kubeconfig_path, prometheus_url (None without Prometheus), prometheus_pid
        request_log         list of RequestRecord (time_s, method, path, query, content_type,
                            status, user_agent; `.is_write`) for every request the API received;
                            `writes()` filters POST/PUT/PATCH/DELETE; `clear_request_log()`.
        set_faults(path_regex, error_rate_500=, error_rate_429=, error_rate_409=, latency_s=,
                   drop_rate=, lose_rate=, methods=(), retry_after_s=1)  add a fault rule;
                   `clear_faults()`. Also over HTTP: GET/POST/DELETE
                   <api_url>/rlscale-sandbox/v1/faults, and `rlscale sandbox --fault`.
        freeze_pods(frozen=True)  wedged engines: /metrics answers, the values stand still
        pod_url(pod or name)  "http://127.0.0.1:PORT" of a pod's vLLM server
        sleeping_pods()     the Deployment's pods whose engine sleeps (not Ready, still scraped)
        fail_standby(pod_name, "sleep" | "wake", "error" | "hang" | None)  that pod's /sleep or
                            /wake_up answers 500 or never; None clears
        create_placeholder(replicas=1, name=None), placeholder_pods(name=None), nodes()
                            with `nodes=`: the over-provisioning Deployment, its pods, the nodes
        pause_prometheus(), resume_prometheus()  a Prometheus outage (SIGSTOP / SIGCONT)
        task_errors         background tasks that died before stop() (each also logged)
        pods(), deployment_object(), ready_count(), call(fn(store))
        wait_for(predicate, timeout_s), wait_for_ready(n, timeout_s)
        query(promql), wait_for_query(promql, predicate, timeout_s)
        pod_metrics_urls()  {"namespace/pod": "http://127.0.0.1:PORT/metrics"} of listening pods
        last_step           the latest ReplayStep (ready replicas, arrivals, serving snapshot)
        stop()              stops everything it started (Prometheus by PID); idempotent, also
                            run at interpreter exit.

    Threads: the servers run on one event loop in a background thread. Prometheus is started from
    the calling thread with PR_SET_PDEATHSIG, so call `start()` from a thread that outlives the
    sandbox (the main thread, normally).
    """

    def __init__(
        self,
        profile: ServiceProfile | str = "llama-3.1-8b-h100",
        workload: Workload | None = None,
        *,
        namespace: str = "default",
        deployment: str = "llm",
        replicas: int = 1,
        time_scale: float = 1.0,
        seed: int = 0,
        prometheus: bool | PrometheusProcess = True,
        prometheus_binary: str | None = None,
        scrape_interval_s: float = 1.0,
        relabel_vllm_names: bool = True,
        metric_spelling: Spelling = "negotiated",
        token: str = DEFAULT_TOKEN,
        allow_anonymous: bool = True,
        history_limit: int = 1000,
        pending_share: float = 0.5,
        replay_period_s: float = 0.25,
        model_factory: Callable[[ServiceProfile], ServingModelLike] | None = None,
        workdir: str | Path | None = None,
        kubeconfig_out: str | Path | None = None,
        count_aborts: bool = True,
        termination_grace_s: int = 30,
        sleep_mode: bool = True,
        vllm_port_name: str = "http",
        nodes: NodePool | None = None,
    ) -> None:
        if replicas < 0:
            raise ValueError(f"replicas = {replicas}, must be >= 0")
        self.profile = profile if isinstance(profile, ServiceProfile) else load_profile(profile)
        self.workload = workload or constant_workload(
            2.0,
            prompt_tokens=self.profile.typical_prompt_tokens,
            output_tokens=self.profile.typical_output_tokens,
        )
        self.namespace = namespace
        self.deployment = deployment
        self.replicas = replicas
        self.time_scale = time_scale
        self.seed = seed
        self.use_prometheus = bool(prometheus)
        self._shared_prom = prometheus if isinstance(prometheus, PrometheusProcess) else None
        self._sd_source = f"{namespace}-{deployment}-{id(self):x}"
        self.prometheus_binary = prometheus_binary
        self.scrape_interval_s = scrape_interval_s
        self.relabel_vllm_names = relabel_vllm_names
        self.metric_spelling = metric_spelling
        self.token = token
        self.allow_anonymous = allow_anonymous
        self.history_limit = history_limit
        self.pending_share = pending_share
        self.replay_period_s = replay_period_s
        self.model_factory = model_factory or default_serving_model
        self._workdir_arg = Path(workdir) if workdir else None
        self._kubeconfig_out = Path(kubeconfig_out) if kubeconfig_out else None
        self.count_aborts = count_aborts
        self.termination_grace_s = termination_grace_s
        self.sleep_mode = sleep_mode
        self.vllm_port_name = vllm_port_name
        self.node_pool = nodes

        self.workdir: Path | None = None
        self._own_workdir = False
        self.faults = FaultInjector(seed)
        self._request_log = RequestLog()
        self.clock = ScaledClock(time_scale)
        self._loop: LoopThread | None = None
        self.store: Store | None = None
        self.api: ApiServer | None = None
        self.fleet: PodFleet | None = None
        self.controller: ClusterController | None = None
        self.replay: Replay | None = None
        self.prom: PrometheusProcess | None = None
        self._stop_event: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.task_errors: list[tuple[str, BaseException | None]] = []  # tasks that died
        self.kubeconfig_path: Path | None = None
        self._started = False
        self._stopped = False

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> Sandbox:
        if self._started:
            return self
        self._started = True
        _LIVE.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self._workdir_arg is not None:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="rlscale-sandbox-"))
            self._own_workdir = True
        if self._shared_prom is not None:
            self.prom = self._shared_prom
        elif self.use_prometheus:
            # Spawned before any thread of ours exists; it loads while the rest starts.
            self.prom = PrometheusProcess(
                self.workdir / "prometheus",
                binary=self.prometheus_binary,
                scrape_interval_s=self.scrape_interval_s,
                relabel_vllm_names=self.relabel_vllm_names,
            )
            self.prom.spawn()
        self.clock = ScaledClock(self.time_scale)
        self._loop = LoopThread().start()
        self._loop.run(self._start_async())
        self.kubeconfig_path = self.workdir / "kubeconfig.yaml"
        text = yaml.safe_dump(kubeconfig(self.api_url, self.token, self.namespace), sort_keys=False)
        self.kubeconfig_path.write_text(text)
        if self._kubeconfig_out is not None:
            self._kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
            self._kubeconfig_out.write_text(text)
        if self.prom is not None:
            if self._shared_prom is None:
                self.prom.wait_ready()
            # Targets that appeared while Prometheus was loading.
            self.prom.update_targets(
                self.call(lambda _s: self.fleet.targets if self.fleet else []), self._sd_source
            )

    async def _start_async(self) -> None:
        self.store = Store(history_limit=self.history_limit, seed=self.seed)
        self.api = ApiServer(
            self.store,
            token=self.token,
            allow_anonymous=self.allow_anonymous,
            faults=self.faults,
            request_log=self._request_log,
        )
        await self.api.start()

        def targets_changed(targets: list[dict[str, Any]]) -> None:
            if self.prom is not None and self.prom.pid is not None:
                self.prom.update_targets(targets, self._sd_source)

        self.fleet = PodFleet(
            self.store,
            model_name=self.profile.model,
            gpus_per_replica=self.profile.gpus_per_replica,
            spelling=self.metric_spelling,
            on_targets_changed=targets_changed,
        )
        self.controller = ClusterController(
            self.store,
            self.profile,
            self.clock,
            seed=self.seed,
            pending_share=self.pending_share,
            reserve_port=self.fleet.reserve_port,
            port_name=self.vllm_port_name,
            nodes=self.node_pool,
        )
        self.fleet.engines = self.controller
        self.store.create(
            DEPLOYMENTS,
            self.namespace,
            deployment_manifest(
                self.deployment,
                self.namespace,
                self.replicas,
                self.profile,
                self.termination_grace_s,
                sleep_mode=self.sleep_mode,
                port_name=self.vllm_port_name,
            ),
        )
        self.replay = Replay(
            self.store,
            self.fleet,
            self.controller,
            self.workload,
            self.model_factory(self.profile),
            self.clock,
            namespace=self.namespace,
            deployment=self.deployment,
        )
        self.fleet.count_aborts = self.count_aborts
        self._stop_event = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self.controller.run(self._stop_event), name="controller"),
            asyncio.create_task(
                self.replay.run(self._stop_event, self.replay_period_s), name="replay"
            ),
            asyncio.create_task(self._follow_pods(self._stop_event), name="pod-endpoints"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A background task that ends before stop() is a broken sandbox: say so, loudly."""
        if task.cancelled() or (self._stop_event is not None and self._stop_event.is_set()):
            return
        error = task.exception()
        self.task_errors.append((task.get_name(), error))
        log.error(
            "sandbox task %s died: %s",
            task.get_name(),
            f"{type(error).__name__}: {error}" if error is not None else "returned early",
            exc_info=error,
        )

    async def _follow_pods(self, stop: asyncio.Event) -> None:
        """Start and stop pod endpoints as soon as pods change (the replay also syncs)."""
        assert self.store is not None and self.fleet is not None
        changed = asyncio.Event()

        def on_change(event: Any) -> None:
            if event.resource.key == PODS.key:
                changed.set()

        self.store.listeners.append(on_change)
        try:
            while not stop.is_set():
                await wait_any(changed, stop, timeout_s=None)
                if changed.is_set():
                    changed.clear()
                    await self.fleet.sync()
        finally:
            self.store.listeners.remove(on_change)

    async def _stop_async(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:  # noqa: BLE001 - a crashed background task must not block the stop
                pass
        if self.api is not None:
            await self.api.stop()
        if self.fleet is not None:
            await self.fleet.stop()

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice and after a failed start."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._loop is not None and self._loop.running:
                try:
                    self._loop.run(self._stop_async(), timeout_s=15.0)
                finally:
                    self._loop.stop()
        finally:
            try:
                if self.prom is not None:
                    if self._shared_prom is None and self.prom.pid is not None:
                        # A paused Prometheus would not act on SIGTERM.
                        with contextlib.suppress(OSError):
                            os.kill(self.prom.pid, signal.SIGCONT)
                    if self._shared_prom is not None:
                        self.prom.remove_targets(self._sd_source)
                    else:
                        self.prom.stop()
            finally:
                if self._own_workdir and self.workdir is not None:
                    shutil.rmtree(self.workdir, ignore_errors=True)
                _LIVE.discard(self)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses -------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        if self.api is None:
            raise RuntimeError("the sandbox is not started")
        return self.api.url

    @property
    def prometheus_url(self) -> str | None:
        return self.prom.url if self.prom is not None and self.prom.pid is not None else None

    @property
    def prometheus_pid(self) -> int | None:
        return self.prom.pid if self.prom is not None else None

    # requests and faults -----------------------------------------------------------------
    @property
    def request_log(self) -> list[RequestRecord]:
        return self._request_log.snapshot()

    def writes(self) -> list[RequestRecord]:
        return [r for r in self.request_log if r.is_write]

    def clear_request_log(self) -> None:
        self._request_log.clear()

    def set_faults(
        self,
        path_regex: str,
        *,
        error_rate_500: float = 0.0,
        error_rate_429: float = 0.0,
        latency_s: float = 0.0,
        drop_rate: float = 0.0,
        methods: tuple[str, ...] = (),
        retry_after_s: int = 1,
        error_rate_409: float = 0.0,
        lose_rate: float = 0.0,
    ) -> FaultRule:
        """Faults on the stand-in API (see `apiserver.faults`): `error_rate_409` a Conflict storm,
        `lose_rate` requests carried out whose answer is lost (a write that lands, a client that
        times out)."""
        rule = FaultRule(
            path_regex,
            error_rate_500=error_rate_500,
            error_rate_429=error_rate_429,
            latency_s=latency_s,
            drop_rate=drop_rate,
            methods=tuple(m.upper() for m in methods),
            retry_after_s=retry_after_s,
            error_rate_409=error_rate_409,
            lose_rate=lose_rate,
        )
        self.faults.add(rule)
        return rule

    def freeze_pods(self, frozen: bool = True) -> int:
        """Wedge every pod's engine (its /metrics keeps answering with frozen values) or unwedge
        it; returns the number of pods touched."""
        return self.call(lambda _s: self.fleet.freeze(frozen) if self.fleet else 0)

    def pause_prometheus(self) -> None:
        """A Prometheus outage: the process is stopped (SIGSTOP): no scrapes, no answers."""
        pid = self._own_prometheus_pid()
        os.kill(pid, signal.SIGSTOP)

    def resume_prometheus(self) -> None:
        pid = self._own_prometheus_pid()
        os.kill(pid, signal.SIGCONT)

    def _own_prometheus_pid(self) -> int:
        if self.prom is None or self.prom.pid is None or self._shared_prom is not None:
            raise RuntimeError("this sandbox has no Prometheus of its own to pause")
        return self.prom.pid

    def clear_faults(self) -> None:
        self.faults.clear()

    def fail_standby(
        self, pod_name: str, action: StandbyAction, mode: StandbyFault | None = "error"
    ) -> None:
        """Make a pod's `/sleep` ("sleep") or `/wake_up` ("wake") fail: "error" answers 500,
        "hang" never answers; neither changes the engine. None clears it (`PodFleet.fail_standby`)."""
        self.call(
            lambda _s: self.fleet.fail_standby(pod_name, action, mode) if self.fleet else None
        )

    # state -----------------------------------------------------------------------------
    def call(self, fn: Callable[[Store], T], timeout_s: float = 10.0) -> T:
        """Run `fn(store)` on the sandbox's loop thread (the store is not thread-safe)."""
        if self._loop is None or self.store is None:
            raise RuntimeError("the sandbox is not started")
        store = self.store
        return self._loop.call(lambda: fn(store), timeout_s)

    def pods(self) -> list[Obj]:
        """The Deployment's pods (terminating ones included)."""

        def owned(s: Store) -> list[Obj]:
            d = s.find(DEPLOYMENTS, self.namespace, self.deployment)
            return (
                self.controller.owned_pods(d)
                if d is not None and self.controller is not None
                else []
            )

        return self.call(owned)

    def sleeping_pods(self) -> list[Obj]:
        """The Deployment's pods whose engine sleeps (from `/sleep` until a wake is done)."""
        sleeping = self.call(
            lambda s: {
                p["metadata"]["name"]
                for p in s.list(PODS, self.namespace)
                if self.fleet is not None and self.fleet.is_sleeping(p)
            }
        )
        return [p for p in self.pods() if p["metadata"]["name"] in sleeping]

    def pod_url(self, pod: Obj | str) -> str:
        """`http://127.0.0.1:PORT` of a pod's vLLM server: `status.podIP` (or the loopback
        address before it has one) and its container port named `vllm_port_name`."""
        if isinstance(pod, str):
            name = pod
            pod = self.call(lambda s: s.get(PODS, self.namespace, name))
        ports = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("ports") or []
        port = next(p["containerPort"] for p in ports if p.get("name") == self.vllm_port_name)
        ip = (pod.get("status") or {}).get("podIP") or "127.0.0.1"
        return f"http://{ip}:{port}"

    def create_placeholder(self, replicas: int = 1, name: str | None = None) -> Obj:
        """Create the placeholder Deployment (`<deployment>-placeholder`, `nodes.placeholder_manifest`:
        pause pods holding one replica's GPUs each, PriorityClass `rlscale-placeholder`). Needs
        `nodes=` (without a node pool nothing is scheduled, so nothing would be held)."""
        if self.node_pool is None:
            raise RuntimeError(
                "create_placeholder needs a node pool: Sandbox(..., nodes=NodePool())"
            )
        manifest = placeholder_manifest(
            self.deployment, self.namespace, replicas, self.profile.gpus_per_replica, name=name
        )
        return self.call(lambda s: s.create(DEPLOYMENTS, self.namespace, manifest))

    def placeholder_pods(self, name: str | None = None) -> list[Obj]:
        """The pods of the placeholder Deployment (`<deployment>-placeholder` by default)."""
        label = name or f"{self.deployment}-placeholder"
        return [
            p for p in self.all_pods() if (p["metadata"].get("labels") or {}).get("app") == label
        ]

    def nodes(self) -> list[dict[str, Any]]:
        """The node pool, one row per node: name, gpus, gpus_free, ready, ready_at_s (simulated),
        images, weights, pods. Empty without `nodes=`."""

        def rows(s: Store) -> list[dict[str, Any]]:
            fleet = self.controller.node_fleet if self.controller is not None else None
            return [] if fleet is None else fleet.describe(s.list(PODS), self.clock.now_s())

        return self.call(rows)

    def all_pods(self) -> list[Obj]:
        return self.call(lambda s: s.list(PODS, self.namespace))

    def deployment_object(self) -> Obj:
        return self.call(lambda s: s.get(DEPLOYMENTS, self.namespace, self.deployment))

    def ready_count(self) -> int:
        return sum(1 for p in self.pods() if serving(p))

    @property
    def last_step(self) -> ReplayStep | None:
        return self.replay.last if self.replay is not None else None

    def pod_metrics_urls(self) -> dict[str, str]:
        return self.call(lambda _s: self.fleet.urls() if self.fleet else {})

    def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 30.0, poll_s: float = 0.05
    ) -> None:
        """Poll `predicate()` until true; TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout_s} s")
            time.sleep(poll_s)

    def wait_for_ready(self, n: int, timeout_s: float = 30.0) -> None:
        """Until exactly `n` of the Deployment's pods serve (Ready, not terminating) and no other
        pod of it is live."""

        def done() -> bool:
            pods = [p for p in self.pods() if not is_terminating(p)]
            if len(pods) != n or not all(serving(p) for p in pods):
                return False
            listening = self.pod_metrics_urls()
            return all(f"{self.namespace}/{p['metadata']['name']}" in listening for p in pods)

        self.wait_for(done, timeout_s)

    def query(self, promql: str) -> list[dict[str, Any]]:
        if self.prom is None:
            raise RuntimeError("this sandbox runs without Prometheus")
        return self.prom.query(promql)

    def wait_for_query(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout_s: float = 30.0,
    ) -> list[dict[str, Any]]:
        if self.prometheus_url is None:
            raise RuntimeError("this sandbox runs without Prometheus")
        return prom_wait_for(self.prometheus_url, promql, predicate, timeout_s=timeout_s)


# Sandboxes still running at interpreter exit are stopped (their Prometheus included).
_LIVE: weakref.WeakSet[Sandbox] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for sb in list(_LIVE):
        sb.stop()
