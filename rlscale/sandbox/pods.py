"""Emulated LLM server pods: one server per pod on its own loopback port (the pod's container port
named `http`, and `prometheus.io/port`), listening from the pod's first Ready on: `/metrics`,
`/health`, `/v1/models`, and vLLM's sleep-mode endpoints.

Sleep mode, as vLLM serves it with VLLM_SERVER_DEV_MODE=1 (without it the routes do not exist:
404; the sandbox's Deployment sets it and `--enable-sleep-mode` unless `sleep_mode=False`):

| request                | answer                                                                  |
|------------------------|-------------------------------------------------------------------------|
| `POST /sleep?level=1`  | 200, empty body, once asleep; idempotent. Level 2 is taken as level 1 (the emulated wake does not reload weights); another level: 400 |
| `POST /wake_up`        | 200, empty body, once awake: it waits the wake (a `warm_wake` draw, simulated seconds at the clock's pace); idempotent (at once when awake; a second call joins the wake in progress); `?tags=` is accepted and ignored (a wake wakes weights and KV cache together) |
| `GET /is_sleeping`     | `{"is_sleeping": true}` from the sleep until the wake is done           |
| either, on a pod that is terminating, gone from the API, or whose wake was called off by a sleep | 503 `{"detail": ...}` (a pod still starting refuses connections: nothing listens yet) |

A sleeping pod: not Ready (out of the Service: the replay feeds it nothing), still a scrape target
(see `PodFleet.sync`), its requests in flight aborted at the sleep (`finished_reason="abort"`;
our choice: a controller should put only drained pods to sleep, and what vLLM does with
requests in flight at a sleep differs between releases),
gauges 0, counters still until it wakes. Faults for tests: `PodFleet.fail_standby` (500, or a
call that never answers; neither changes the engine).

Each pod exposes what a vLLM server and the DCGM exporter on its GPU would, with vLLM's names,
label (`model_name`) and histogram buckets:

| series                                               | type      | per pod                         |
|------------------------------------------------------|-----------|---------------------------------|
| vllm:num_requests_waiting, vllm:num_requests_running | gauge     | cluster total / ready pods (a terminating pod: what it still drains) |
| vllm:gpu_cache_usage_perc, vllm:kv_cache_usage_perc  | gauge     | 0..1, the per-replica mean      |
| vllm:time_to_first_token_seconds                     | histogram | one observation per admitted request |
| vllm:time_per_output_token_seconds, vllm:inter_token_latency_seconds | histogram | one per output token after the first |
| vllm:e2e_request_latency_seconds                     | histogram | one per completed request       |
| vllm:prompt_tokens_total, vllm:generation_tokens_total | counter | monotonic per pod |
| vllm:request_success_total{finished_reason}           | counter   | `stop`: completed; `abort`: the requests whose client gave up while they waited (the serving model's `dropped`) |
| DCGM_FI_DEV_GPU_UTIL{gpu, UUID, device, modelName, Hostname} | gauge | 0..100, one per GPU of the replica |

`pod` and `namespace` are not in the exposition: Prometheus adds them as target labels (file_sd
here, kubernetes_sd in a cluster), as it does for a real vLLM pod.

Histograms from percentiles: the serving model gives p50/p95/p99 per interval, not individual
requests, so each interval's observations are spread over the buckets by a piecewise-linear CDF
through (0, p50²/p95), (0.5, p50), (0.95, p95), (0.99, p99), (1, p99²/p95); the sum adds the
mean of that distribution. E2E latency at quantile q is TTFT_q + (output tokens - 1) x TPOT_q.

Arrivals: vLLM has no arrival counter. A request leaves it through `request_success_total`
(finished_reason stop/length, or abort when its client went away) or is still in it (waiting,
running), so completions + aborts + the growth of waiting and running is the arrival rate, also
under overload when the queue is full and clients give up. vLLM V1 labels aborts
`finished_reason="abort"`, but some releases never count client aborts (vLLM issue #31503, 0.13):
with those, arrivals read low exactly when the server is overloaded; `count_aborts=False`
emulates them.

Frozen (`PodMetrics.frozen`): a wedged engine whose /metrics still answers with the values it had
(current timestamps, counters that no longer move), for tests of the controller's freeze check.

Spelling: the exposition goes through prometheus_client's content negotiation, as vLLM's does.
With prometheus_client >= 0.23 an OpenMetrics scrape (Prometheus asks for one) gets `vllm_foo`
instead of `vllm:foo` (client_python #1177); `spelling="colon"` or `"underscore"` pins one
spelling for tests of tolerant queries.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rlscale.sandbox.apiserver.resources import PODS, Obj
from rlscale.sandbox.apiserver.store import Store
from rlscale.sandbox.kubelet import (
    ClusterController,
    EngineUnavailable,
    is_ready,
    is_terminating,
    serving,
)

TTFT_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
TPOT_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS_S = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)

Spelling = Literal["negotiated", "colon", "underscore"]
StandbyAction = Literal["sleep", "wake"]
StandbyFault = Literal["error", "hang"]

_UNCLAIMED_PORT_S = 10.0  # a reserved port no pod claims within this long is released

_P = np.array([0.0, 0.5, 0.95, 0.99, 1.0])


def quantile_points(p50: float, p95: float, p99: float) -> np.ndarray:
    """Values at probabilities `_P`: the piecewise-linear quantile function used for buckets."""
    p50, p95, p99 = (max(float(x), 0.0) for x in (p50, p95, p99))
    p95, p99 = max(p95, p50), max(p99, p95, p50)
    lo = p50 * p50 / p95 if p95 > 0 else 0.0
    hi = p99 * p99 / p95 if p95 > 0 else p99
    return np.array([lo, p50, p95, p99, max(hi, p99)])


def bucket_fractions(values: np.ndarray, bounds: Iterable[float]) -> tuple[np.ndarray, float]:
    """Cumulative share of observations <= each bound, and the mean, for the quantile function
    through (`_P`, `values`)."""
    b = np.asarray(tuple(bounds), dtype=np.float64)
    # Strictly increasing x for np.interp: a degenerate (constant) latency becomes a tiny ramp.
    xs = np.maximum.accumulate(values + np.arange(len(values)) * 1e-12)
    cdf = np.interp(b, xs, _P, left=0.0, right=1.0)
    mean = float(np.sum(np.diff(_P) * (xs[:-1] + xs[1:]) / 2.0))
    return cdf, mean


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    cumulative: np.ndarray = field(init=False)
    count: float = 0.0
    total: float = 0.0

    def __post_init__(self) -> None:
        self.cumulative = np.zeros(len(self.bounds))

    def observe_distribution(self, n: float, values: np.ndarray) -> None:
        if n <= 0:
            return
        cdf, mean = bucket_fractions(values, self.bounds)
        self.cumulative += n * cdf
        self.count += n
        self.total += n * mean

    def buckets(self) -> list[tuple[str, float]]:
        out = [(_le(b), float(c)) for b, c in zip(self.bounds, self.cumulative, strict=True)]
        return [*out, ("+Inf", self.count)]


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class PodMetrics:
    """One pod's series. Gauges are set per replay step; counters and histograms only grow."""

    model_name: str
    gpus: int = 1
    gpu_model: str = "NVIDIA H100 80GB HBM3"
    hostname: str = "sandbox-node"
    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float = 0.0
    gpu_utilization_pct: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    request_success: float = 0.0
    request_abort: float = 0.0
    count_aborts: bool = True  # as a vLLM that counts client aborts (see the module docstring)
    frozen: bool = False  # a wedged engine: the series keep their values
    # Set by `apply`, used by `drain`: the pod's own completion rate and request sizes.
    completion_rps: float = 0.0
    output_tokens_per_request: float = 0.0
    prompt_tokens_per_request: float = 0.0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS_S))
    tpot: Histogram = field(default_factory=lambda: Histogram(TPOT_BUCKETS_S))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS_S))
    gpu_uuids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.gpu_uuids:
            self.gpu_uuids = [f"GPU-{uuid.uuid4()}" for _ in range(self.gpus)]

    def apply(
        self, snap: Any, share: float, output_tokens: float, dt_s: float | None = None
    ) -> None:
        """Add this pod's `share` (1 / ready pods) of one interval (`dt_s` long) of a
        `ServingSnapshot`."""
        if self.frozen:
            return
        self.waiting = snap.requests_waiting * share
        self.running = snap.requests_running * share
        self.kv_cache_usage = float(np.clip(snap.kv_cache_usage, 0.0, 1.0))
        self.gpu_utilization_pct = float(np.clip(snap.gpu_utilization_pct, 0.0, 100.0))
        started = max(float(getattr(snap, "started", snap.completed)), 0.0) * share
        completed = max(float(snap.completed), 0.0) * share
        out_tokens = max(float(snap.output_tokens_served), 0.0) * share
        self.prompt_tokens += max(float(snap.prompt_tokens_served), 0.0) * share
        self.generation_tokens += out_tokens
        self.request_success += completed
        if dt_s is not None and dt_s > 0:
            self.completion_rps = completed / dt_s
        self.output_tokens_per_request = output_tokens
        if started > 0:
            self.prompt_tokens_per_request = (
                max(float(snap.prompt_tokens_served), 0.0) * share / started
            )
        if self.count_aborts:
            self.request_abort += max(float(getattr(snap, "dropped", 0.0)), 0.0) * share
        ttft_q = quantile_points(snap.ttft_p50_s, snap.ttft_p95_s, snap.ttft_p99_s)
        tpot_q = quantile_points(snap.tpot_p50_s, snap.tpot_p95_s, snap.tpot_p99_s)
        self.ttft.observe_distribution(started, ttft_q)
        self.tpot.observe_distribution(max(out_tokens - completed, 0.0), tpot_q)
        self.e2e.observe_distribution(completed, ttft_q + max(output_tokens - 1.0, 0.0) * tpot_q)

    def fall_asleep(self) -> None:
        """The engine sleeps: the requests it held are aborted (counted under
        finished_reason="abort" when the server counts aborts), gauges go to zero, and nothing
        moves until it wakes (the replay only feeds serving pods)."""
        if self.frozen:
            return
        if self.count_aborts:
            self.request_abort += self.waiting + self.running
        self.idle()

    def idle(self) -> None:
        """A pod that gets no traffic (draining): gauges to zero, counters kept."""
        if self.frozen:
            return
        self.waiting = self.running = self.kv_cache_usage = self.gpu_utilization_pct = 0.0

    def drain(self, dt_s: float) -> None:
        """A terminating pod: no new requests, it finishes the ones it holds at the rate it
        completed them while it served (a vLLM server on SIGTERM lets its in-flight requests
        finish). Whatever it still holds when the pod is removed dies with it, uncounted, as
        it does in a cluster. Latency histograms get no observations here."""
        if self.frozen:
            return
        held = self.waiting + self.running
        done = min(held, max(self.completion_rps, 0.0) * dt_s)
        if held <= 0 or done >= held:
            self.request_success += held
            self.generation_tokens += held * self.output_tokens_per_request
            self.prompt_tokens += self.waiting * self.prompt_tokens_per_request
            self.idle()
            return
        started = min(self.waiting, done)  # the queue's head joins the batch as requests finish
        was_running = self.running
        self.waiting -= started
        self.running = held - done - self.waiting
        self.request_success += done
        self.generation_tokens += done * self.output_tokens_per_request
        self.prompt_tokens += started * self.prompt_tokens_per_request
        if was_running > 0:
            self.kv_cache_usage *= self.running / was_running

    def families(self, spelling: Literal["colon", "underscore"] = "colon") -> list[Metric]:
        def n(name: str) -> str:
            return name if spelling == "colon" else name.replace(":", "_")

        lbl = ["model_name"]
        val = [self.model_name]
        out: list[Metric] = []
        for name, doc, value in (
            (
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
                self.running,
            ),
            (
                "vllm:num_requests_waiting",
                "Number of requests waiting to be processed.",
                self.waiting,
            ),
            (
                "vllm:gpu_cache_usage_perc",
                "GPU KV-cache usage. 1 means 100 percent usage.",
                self.kv_cache_usage,
            ),
            (
                "vllm:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
                self.kv_cache_usage,
            ),
        ):
            g = GaugeMetricFamily(n(name), doc, labels=lbl)
            g.add_metric(val, value)
            out.append(g)
        for name, doc, value in (
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
                self.generation_tokens,
            ),
        ):
            c = CounterMetricFamily(n(name), doc, labels=lbl)
            c.add_metric(val, value)
            out.append(c)
        success = CounterMetricFamily(
            n("vllm:request_success"),
            "Count of successfully processed requests.",
            labels=[*lbl, "finished_reason"],
        )
        success.add_metric([*val, "stop"], self.request_success)
        success.add_metric([*val, "abort"], self.request_abort)
        out.append(success)
        for name, doc, hist in (
            (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                self.ttft,
            ),
            (
                "vllm:time_per_output_token_seconds",
                "Histogram of time per output token in seconds.",
                self.tpot,
            ),
            (
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
                self.tpot,
            ),
            (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                self.e2e,
            ),
        ):
            h = HistogramMetricFamily(n(name), doc, labels=lbl)
            h.add_metric(val, hist.buckets(), hist.total)
            out.append(h)
        dcgm = GaugeMetricFamily(
            "DCGM_FI_DEV_GPU_UTIL",
            "GPU utilization (in %).",
            labels=["gpu", "UUID", "device", "modelName", "Hostname"],
        )
        for i, gpu_uuid in enumerate(self.gpu_uuids):
            dcgm.add_metric(
                [str(i), gpu_uuid, f"nvidia{i}", self.gpu_model, self.hostname],
                self.gpu_utilization_pct,
            )
        out.append(dcgm)
        return out


class _Collector:
    def __init__(self, metrics: PodMetrics, spelling: Literal["colon", "underscore"]) -> None:
        self.metrics = metrics
        self.spelling = spelling

    def collect(self) -> list[Metric]:
        return self.metrics.families(self.spelling)


def render(
    metrics: PodMetrics, accept: str | None, spelling: Spelling = "negotiated"
) -> tuple[bytes, str]:
    """The body and Content-Type a scrape with this Accept header gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, "underscore" if spelling == "underscore" else "colon"))
    if spelling == "negotiated":
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type
    return generate_latest(registry), CONTENT_TYPE_LATEST


@dataclass
class PodEndpoint:
    """A pod's metrics server: the socket is bound when the pod is created (the port goes into the
    pod spec) and listens only once the pod turns Ready, so a scrape before then is refused, as
    a vLLM server that is still loading would refuse it."""

    port: int
    sock: socket.socket
    reserved_at_s: float = field(default_factory=time.monotonic)
    metrics: PodMetrics | None = None
    dev_mode: bool = True  # the container sets VLLM_SERVER_DEV_MODE=1: sleep endpoints exist
    hostname: str = "sandbox-node"  # the pod's node: DCGM's Hostname label
    runner: web.AppRunner | None = None
    pod_key: tuple[str, str] | None = None
    listening_at_s: float | None = None  # monotonic time its endpoint started


class PodFleet:
    """The metrics endpoints of all pods; `sync()` follows the pods in the store."""

    def __init__(
        self,
        store: Store,
        *,
        model_name: str,
        gpus_per_replica: int = 1,
        spelling: Spelling = "negotiated",
        host: str = "127.0.0.1",
        on_targets_changed: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.store = store
        self.model_name = model_name
        self.gpus_per_replica = gpus_per_replica
        self.spelling = spelling
        self.host = host
        self.on_targets_changed = on_targets_changed
        self.endpoints: dict[int, PodEndpoint] = {}
        self._targets: list[dict[str, Any]] = []
        # sync() is called by the replay and by the pod follower; one at a time, or one stops an
        # endpoint the other is starting (AttributeError on a runner set to None mid-setup).
        self._sync_lock = asyncio.Lock()
        self.count_aborts = True
        self.frozen = False  # new endpoints start frozen too (`freeze`)
        # Wall seconds between a pod's endpoint listening (it serves) and its becoming a scrape
        # target: Prometheus service discovery lags (kubernetes_sd, its refresh, a scrape
        # interval); 0 leaves only Prometheus' own 0-5 s.
        self.discovery_delay_s = 0.0
        # A terminating pod stays a scrape target until it is removed, as with kubernetes_sd
        # `role: pod` (a PodMonitor drops only Succeeded/Failed pods) and EndpointSlices that
        # keep terminating endpoints; False: targets are the serving pods only.
        self.scrape_terminating = True
        # The pods' engines for the sleep endpoints (set by the sandbox): without it they
        # answer 503. Faults on them: `fail_standby`.
        self.engines: ClusterController | None = None
        self._standby_faults: dict[tuple[str, StandbyAction], StandbyFault] = {}

    def fail_standby(
        self, pod_name: str, action: StandbyAction, mode: StandbyFault | None = "error"
    ) -> None:
        """Make `pod_name`'s `/sleep` (action "sleep") or `/wake_up` ("wake") fail from now on:
        "error" answers 500 and changes nothing; "hang" never answers (the client times out) and
        changes nothing; None clears the fault."""
        if action not in ("sleep", "wake"):
            raise ValueError(f"action = {action!r}, expected 'sleep' or 'wake'")
        if mode is None:
            self._standby_faults.pop((pod_name, action), None)
        elif mode in ("error", "hang"):
            self._standby_faults[(pod_name, action)] = mode
        else:
            raise ValueError(f"mode = {mode!r}, expected 'error', 'hang' or None")

    def is_sleeping(self, pod: Obj) -> bool:
        meta = pod["metadata"]
        return self.engines is not None and self.engines.is_sleeping(
            meta["namespace"], meta["name"]
        )

    def freeze(self, frozen: bool = True) -> int:
        """Wedge (or unwedge) every pod's engine: its series keep their values; returns how many
        pods it touched."""
        self.frozen = frozen
        n = 0
        for ep in self.endpoints.values():
            if ep.metrics is not None:
                ep.metrics.frozen = frozen
                n += 1
        return n

    def reserve_port(self) -> int:
        """Bind a free loopback port for a pod about to be created (called by the controller)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        port = sock.getsockname()[1]
        self.endpoints[port] = PodEndpoint(port, sock)
        return port

    @staticmethod
    def pod_port(pod: Obj) -> int | None:
        value = ((pod.get("metadata") or {}).get("annotations") or {}).get("prometheus.io/port")
        return int(value) if value else None

    async def sync(self) -> None:
        """Start endpoints of pods that turned Ready, stop those of removed pods, and report the
        scrape targets (serving pods, sleeping ones, and terminating ones still listening unless
        `scrape_terminating` is off) when they change. A sleeping pod is Running and its
        /metrics answers, so it stays a target, as a PodMonitor (`role: pod`) scrapes Running
        pods whether Ready or not."""
        async with self._sync_lock:
            await self._sync()

    async def _sync(self) -> None:
        pods = self.store.list(PODS)
        present: set[int] = set()
        for pod in pods:
            port = self.pod_port(pod)
            ep = self.endpoints.get(port) if port is not None else None
            if ep is None or port is None:
                continue
            present.add(port)
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            ep.pod_key = key
            if ep.runner is None and is_ready(pod):
                ep.dev_mode = _dev_mode(pod)
                ep.hostname = str((pod.get("spec") or {}).get("nodeName") or ep.hostname)
                await self._start(ep)
        for port, ep in list(self.endpoints.items()):
            # A reserved port whose pod is gone (or never showed up) is released.
            stale = time.monotonic() - ep.reserved_at_s > _UNCLAIMED_PORT_S
            if port not in present and (ep.pod_key is not None or ep.runner is not None or stale):
                await self._stop(ep)
                del self.endpoints[port]
        targets = []
        for pod in pods:
            port = self.pod_port(pod)
            ep = self.endpoints.get(port) if port is not None else None
            if (
                ep is not None
                and ep.runner is not None
                and (
                    serving(pod)
                    or (self.scrape_terminating and is_terminating(pod))
                    or (not is_terminating(pod) and self.is_sleeping(pod))
                )
                and time.monotonic() - (ep.listening_at_s or 0.0) >= self.discovery_delay_s
            ):
                container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
                targets.append(
                    {
                        "targets": [f"{self.host}:{port}"],
                        "labels": {
                            "namespace": pod["metadata"]["namespace"],
                            "pod": pod["metadata"]["name"],
                            "container": container,
                        },
                    }
                )
        if targets != self._targets:
            self._targets = targets
            if self.on_targets_changed is not None:
                self.on_targets_changed(targets)

    @property
    def targets(self) -> list[dict[str, Any]]:
        return list(self._targets)

    def metrics_of(self, namespace: str, name: str) -> PodMetrics | None:
        for ep in self.endpoints.values():
            if ep.pod_key == (namespace, name) and ep.metrics is not None:
                return ep.metrics
        return None

    def urls(self) -> dict[str, str]:
        """`namespace/name` -> metrics URL, for pods whose endpoint is listening."""
        return {
            f"{ep.pod_key[0]}/{ep.pod_key[1]}": f"http://{self.host}:{ep.port}/metrics"
            for ep in self.endpoints.values()
            if ep.runner is not None and ep.pod_key is not None
        }

    async def _start(self, ep: PodEndpoint) -> None:
        ep.metrics = PodMetrics(
            self.model_name,
            gpus=self.gpus_per_replica,
            hostname=ep.hostname,
            count_aborts=self.count_aborts,
            frozen=self.frozen,
        )
        metrics, spelling, model = ep.metrics, self.spelling, self.model_name

        async def scrape(request: web.Request) -> web.Response:
            body, content_type = render(metrics, request.headers.get("Accept"), spelling)
            return web.Response(body=body, headers={"Content-Type": content_type})

        async def health(_request: web.Request) -> web.Response:
            return web.Response(text="")

        async def models(_request: web.Request) -> web.Response:
            return web.json_response(
                {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "vllm"}]}
            )

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        if ep.dev_mode:

            async def sleep(request: web.Request) -> web.Response:
                return await self._sleep(ep, request)

            async def wake_up(_request: web.Request) -> web.Response:
                return await self._wake_up(ep)

            async def is_sleeping(_request: web.Request) -> web.Response:
                return self._is_sleeping(ep)

            app.router.add_post("/sleep", sleep)
            app.router.add_post("/wake_up", wake_up)
            app.router.add_get("/is_sleeping", is_sleeping)
        ep.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await ep.runner.setup()
        site = web.SockSite(ep.runner, ep.sock)
        await site.start()
        ep.listening_at_s = time.monotonic()

    # sleep mode: vLLM's dev endpoints (VLLM_SERVER_DEV_MODE=1, --enable-sleep-mode) --------
    async def _standby_fault(self, ep: PodEndpoint, action: StandbyAction) -> web.Response | None:
        name = ep.pod_key[1] if ep.pod_key is not None else ""
        mode = self._standby_faults.get((name, action))
        if mode == "hang":
            await asyncio.Event().wait()  # until the server stops; the client times out first
        if mode == "error":
            return _error(500, f"injected {action} failure (fail_standby)")
        return None

    def _engines_for(self, ep: PodEndpoint) -> tuple[ClusterController, str, str]:
        if self.engines is None or ep.pod_key is None:
            raise EngineUnavailable("this pod has no engine to put to sleep")
        return self.engines, ep.pod_key[0], ep.pod_key[1]

    async def _sleep(self, ep: PodEndpoint, request: web.Request) -> web.Response:
        level = request.query.get("level", "1")
        if level not in ("1", "2"):
            return _error(400, f"level = {level!r}, expected 1 or 2")
        fault = await self._standby_fault(ep, "sleep")
        if fault is not None:
            return fault
        try:
            engines, ns, name = self._engines_for(ep)
            was_asleep = engines.is_sleeping(ns, name)
            engines.sleep_pod(ns, name)
        except EngineUnavailable as e:
            return _error(503, str(e))
        if not was_asleep and ep.metrics is not None:
            ep.metrics.fall_asleep()
        return web.Response(status=200)

    async def _wake_up(self, ep: PodEndpoint) -> web.Response:
        fault = await self._standby_fault(ep, "wake")
        if fault is not None:
            return fault
        try:
            engines, ns, name = self._engines_for(ep)
            done_at_s = engines.wake_pod(ns, name)
        except EngineUnavailable as e:
            return _error(503, str(e))
        clock = engines.clock
        # vLLM answers once the engine is awake; poll so a ManualClock's steps are seen too
        while (left_s := done_at_s - clock.now_s()) > 0:
            await asyncio.sleep(min(max(clock.real_delay_s(left_s), 0.005), 0.25))
            if engines.waking_until_s(ns, name) != done_at_s:
                break
        if not engines.finish_wake(ns, name):
            # put back to sleep, or deleted, while it woke
            return _error(503, f"pod {ns}/{name}: the wake was called off")
        return web.Response(status=200)

    def _is_sleeping(self, ep: PodEndpoint) -> web.Response:
        sleeping = False
        if self.engines is not None and ep.pod_key is not None:
            sleeping = self.engines.is_sleeping(*ep.pod_key)
        return web.json_response({"is_sleeping": sleeping})

    async def _stop(self, ep: PodEndpoint) -> None:
        if ep.runner is not None:
            await ep.runner.cleanup()
            ep.runner = None
        ep.sock.close()

    async def stop(self) -> None:
        async with self._sync_lock:
            for ep in list(self.endpoints.values()):
                await self._stop(ep)
            self.endpoints.clear()


def _dev_mode(pod: Obj) -> bool:
    """vLLM registers /sleep, /wake_up and /is_sleeping only with VLLM_SERVER_DEV_MODE=1."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    env = {e.get("name"): e.get("value") for e in containers[0].get("env") or []}
    return env.get("VLLM_SERVER_DEV_MODE") == "1"


def _error(status: int, message: str) -> web.Response:
    # FastAPI's shape for an HTTPException, which is what a vLLM endpoint raising one answers
    return web.json_response({"detail": message}, status=status)
