"""The warm pool's HTTP edge: vLLM sleep mode on the target's own pods.

A vLLM server started with `--enable-sleep-mode` (and `VLLM_SERVER_DEV_MODE=1`, which exposes
the endpoints) answers on its API port:

    POST /sleep?level=1   200: weights offloaded to CPU RAM, KV cache dropped; the GPU is held
    POST /wake_up         200 once awake again (weights back on the GPU: seconds)
    GET  /is_sleeping     {"is_sleeping": bool}
    GET  /metrics         vllm:num_requests_running / vllm:num_requests_waiting (the drain check)

A pod is reached at status.podIP and its container port named `standby.port_name`; these are
HTTP calls to pods, not API writes, so RBAC grants nothing for them (a NetworkPolicy must let
the controller reach that port). The pod's readiness probe fails while it sleeps
(`kubernetes/warm-pool/`), so a sleeping pod leaves the Service and the ReplicaSet counts it
not-ready.

`SleepApi` is the protocol the controller holds (tests fake it); `HttpSleepApi` implements it on
urllib3 (already a dependency through the kubernetes client) with a timeout on every call and no
hidden retries (a wake that timed out is retried by the next tick's plan, never behind its
back). `call_all` runs one call on several pods at once, `workers` at a time; every failure comes
back as a `StandbyError` value, never raised, so one pod's fault is reported, not fatal.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import urllib3

from rlscale.deploy.kube import PodAddress

R = TypeVar("R")
_SERIES = re.compile(
    r"^vllm[:_](num_requests_running|num_requests_waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+|NaN)\s*",
    re.MULTILINE,
)


class StandbyError(Exception):
    """A sleep/wake/probe call that did not succeed: refused, an HTTP error, a timeout."""


class SleepApi(Protocol):
    def is_sleeping(self, pod: PodAddress) -> bool: ...

    def sleep(self, pod: PodAddress) -> None: ...

    def wake_up(self, pod: PodAddress) -> None: ...

    def requests_in_flight(self, pod: PodAddress) -> float:
        """Requests running + waiting on the pod (its own /metrics)."""
        ...


class HttpSleepApi:
    """`SleepApi` over HTTP: `probe_timeout_s` for reads, `request_timeout_s` for sleep/wake."""

    def __init__(
        self,
        *,
        request_timeout_s: float = 30.0,
        probe_timeout_s: float = 2.0,
        metrics_path: str = "/metrics",
        workers: int = 8,
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.metrics_path = metrics_path
        # one connection pool per pod address, as many as the calls in flight
        self._http = urllib3.PoolManager(num_pools=max(16, 2 * workers), maxsize=1, retries=False)

    def _call(self, method: str, pod: PodAddress, path: str, timeout_s: float) -> bytes:
        if not pod.ip:
            raise StandbyError(f"pod {pod.name} has no IP")
        try:
            r = self._http.request(
                method, f"{pod.url}{path}", timeout=urllib3.Timeout(total=timeout_s)
            )
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise StandbyError(
                f"{method} {path} on {pod.name}: {type(e).__name__}: {str(e)[:160]}"
            ) from None
        if r.status >= 300:
            raise StandbyError(f"{method} {path} on {pod.name}: HTTP {r.status}")
        return bytes(r.data or b"")

    def is_sleeping(self, pod: PodAddress) -> bool:
        body = self._call("GET", pod, "/is_sleeping", self.probe_timeout_s)
        try:
            doc = json.loads(body)
            value = doc["is_sleeping"]
        except (ValueError, KeyError, TypeError):
            raise StandbyError(f"/is_sleeping on {pod.name}: not {{'is_sleeping': bool}}") from None
        if not isinstance(value, bool):
            raise StandbyError(f"/is_sleeping on {pod.name}: is_sleeping = {value!r}, not a bool")
        return value

    def sleep(self, pod: PodAddress) -> None:
        self._call("POST", pod, "/sleep?level=1", self.request_timeout_s)

    def wake_up(self, pod: PodAddress) -> None:
        self._call("POST", pod, "/wake_up", self.request_timeout_s)

    def requests_in_flight(self, pod: PodAddress) -> float:
        text = self._call("GET", pod, self.metrics_path, self.probe_timeout_s).decode(
            "utf-8", "replace"
        )
        return requests_in_flight(text, pod.name)

    def close(self) -> None:
        self._http.clear()


def requests_in_flight(metrics_text: str, where: str = "pod") -> float:
    """running + waiting from a vLLM /metrics page (summed over label sets); raises
    StandbyError when neither series is there (a pod that cannot show it is idle is not)."""
    found: dict[str, float] = {}
    for name, value in _SERIES.findall(metrics_text):
        found[name] = found.get(name, 0.0) + float(value)
    if "num_requests_running" not in found:
        raise StandbyError(f"{where}: /metrics has no vllm:num_requests_running")
    total = found["num_requests_running"] + found.get("num_requests_waiting", 0.0)
    if not math.isfinite(total):
        raise StandbyError(f"{where}: requests in flight read {total}")
    return total


def call_all(
    fn: Callable[[PodAddress], R], pods: Sequence[PodAddress], workers: int
) -> dict[str, R | StandbyError]:
    """fn on every pod, `workers` at a time; pod name -> result or the StandbyError it raised
    (any other exception is turned into one: a pod's fault never stops the tick)."""

    def one(pod: PodAddress) -> R | StandbyError:
        try:
            return fn(pod)
        except StandbyError as e:
            return e
        except Exception as e:  # noqa: BLE001 - a fake's or client's surprise is still a pod fault
            return StandbyError(f"{pod.name}: {type(e).__name__}: {str(e)[:160]}")

    if not pods:
        return {}
    if len(pods) == 1:
        return {pods[0].name: one(pods[0])}
    with ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(pods))), thread_name_prefix="rlscale-standby"
    ) as pool:
        return dict(zip((p.name for p in pods), pool.map(one, pods), strict=True))
