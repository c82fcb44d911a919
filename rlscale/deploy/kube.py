"""The Kubernetes edge: replica state from the API, the scale write, Events, Leases.

`KubeApi` is the small protocol the controller needs (raw JSON dicts in and out; a 100-target tick
builds no client model objects); `OfficialKubeApi` implements it on the official client's
`ApiClient` and turns every failure into a `rlscale.deploy.retry` error that says whether to try
again. Tests use an in-memory fake.

Replica state comes from the Deployment and its pods, as the HPA counts them:

    ready        Ready condition True, not terminating
    starting     not Ready, not terminating, not finished: capacity on its way (scheduling,
                 image pull, weight load); the controller never piles a scale-up on top of it
    terminating  deletionTimestamp set: draining in-flight requests
    failed       phase Failed/Succeeded: neither capacity nor cost
    sleeping     (a target with a sleeping pool) a starting pod that is Running and answers
                 vLLM's `/is_sleeping` true: a pool member, not capacity on its way; only the
                 controller's probe (`ReplicaState.with_sleeping`) moves a pod here

The scale write is a merge PATCH of the `/scale` subresource carrying the resourceVersion that was
read (the apiserver treats it as a precondition):
a 409 means the Deployment changed in between, so `Scaler.apply` re-reads the Scale and retries
only if spec.replicas is still what the decision was based on. Anything else means someone
else scaled it, and their change is respected, not overwritten.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import urllib3

from rlscale.deploy.config import KubernetesConfig
from rlscale.deploy.retry import (
    Backoff,
    ConflictError,
    ControllerError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    retry,
)

Obj = dict[str, Any]
log = logging.getLogger("rlscale.deploy")
USER_AGENT = "rlscale-controller"


class KubeApi(Protocol):
    def get_deployment(self, namespace: str, name: str) -> Obj: ...

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]: ...

    def read_scale(self, namespace: str, name: str) -> Obj: ...

    def patch_scale(self, namespace: str, name: str, body: Obj) -> Obj: ...

    def create_event(self, namespace: str, body: Obj) -> Obj: ...

    def get_lease(self, namespace: str, name: str) -> Obj: ...

    def create_lease(self, namespace: str, body: Obj) -> Obj: ...

    def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj: ...


def classify(
    status: int, reason: str, body: str | bytes | None, headers: Mapping[str, str] | None
) -> ControllerError:
    """An API error as a retry decision (client-go's: 409 re-read, 429/5xx back off)."""
    message = reason
    try:
        doc = json.loads(body) if body else None
        if isinstance(doc, dict) and doc.get("message"):
            message = str(doc["message"])
    except ValueError:
        pass
    text = f"{status} {message}".strip()
    if status == 409:
        return ConflictError(text, status=status)
    if status == 429 or status >= 500:
        ra = (headers or {}).get("Retry-After")
        delay = float(ra) if ra and ra.isdigit() else None
        return TemporaryError(text, status=status, delay_s=delay)
    if status == 404:
        return NotFoundError(text, status=status)
    if status in (401, 403):
        return PermanentError(
            f"{text} (check the controller's RBAC: kubernetes/rbac.yaml)", status=status
        )
    return PermanentError(text, status=status)


class OfficialKubeApi:
    """`KubeApi` on the official `kubernetes` client's `ApiClient` (kubeconfig or in-cluster
    config, TLS, bearer tokens and their refresh), on its own client (never the global default),
    with no hidden urllib3 retries and a timeout on every request.

    The requests go through `ApiClient.param_serialize` / `call_api`, the layer the generated
    `AppsV1Api`/`CoreV1Api` methods use; those modules themselves are not imported: they cost
    26 MB of RSS and 1.7 s of start-up for the eight calls made here."""

    def __init__(self, api_client: Any, request_timeout_s: float = 5.0) -> None:
        from kubernetes.client.exceptions import ApiException

        self._api_exception = ApiException
        self.api_client = api_client
        self.timeout = request_timeout_s

    @classmethod
    def from_config(cls, cfg: KubernetesConfig, identity: str | None = None) -> OfficialKubeApi:
        import os

        from kubernetes import config
        from kubernetes.client.api_client import ApiClient
        from kubernetes.client.configuration import Configuration

        conf = type.__call__(Configuration)  # a fresh one, not a copy of the global default
        if cfg.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=conf)
        else:
            config.load_kube_config(
                config_file=cfg.kubeconfig, context=cfg.context, client_configuration=conf
            )
        conf.retries = False  # our backoff decides; urllib3's would retry a write behind our back
        api_client = ApiClient(conf)
        # The identity in the User-Agent tells two controllers' requests apart in audit logs.
        api_client.user_agent = f"{USER_AGENT}/{identity}" if identity else USER_AGENT
        return cls(api_client, cfg.request_timeout_s)

    def close(self) -> None:
        self.api_client.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            m, url, hdrs, payload, _post = self.api_client.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            r = self.api_client.call_api(
                m, url, header_params=hdrs, body=payload, _request_timeout=self.timeout
            )
            data = r.read()
        except self._api_exception as e:
            raise TemporaryError(f"API server unreachable: {e.reason or e}") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise TemporaryError(
                f"API server unreachable: {e.__class__.__name__}: {str(e)[:200]}"
            ) from None
        if r.status >= 400:
            raise classify(r.status, r.reason or "", data, dict(r.headers or {}))
        try:
            return json.loads(data)
        except ValueError as e:
            raise TemporaryError(f"API server answered something that is not JSON ({e})") from None

    def get_deployment(self, namespace: str, name: str) -> Obj:
        return self._request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]:
        doc = self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", label_selector)]
        )
        return list(doc.get("items") or [])

    def read_scale(self, namespace: str, name: str) -> Obj:
        return self._request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        )

    def patch_scale(self, namespace: str, name: str, body: Obj) -> Obj:
        """A JSON merge patch of the Scale; a `metadata.resourceVersion` in it is a precondition
        (409 if the Deployment moved on), so RBAC needs only `patch` on deployments/scale."""
        return self._request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
            body=body,
            content_type="application/merge-patch+json",
        )

    def create_event(self, namespace: str, body: Obj) -> Obj:
        return self._request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)

    def get_lease(self, namespace: str, name: str) -> Obj:
        return self._request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        )

    def create_lease(self, namespace: str, body: Obj) -> Obj:
        return self._request(
            "POST", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", body=body
        )

    def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        return self._request(
            "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}", body=body
        )


# --- replica state -----------------------------------------------------------------------------


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector (matchLabels / matchExpressions) as a `labelSelector` query string."""
    if not selector:
        raise PermanentError("the Deployment has no spec.selector")
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), list(e.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise PermanentError(f"unsupported selector operator {op!r}")
    if not parts:
        raise PermanentError("the Deployment's selector is empty")
    return ",".join(parts)


def parse_time_s(text: str | None) -> float | None:
    """RFC 3339 (`2024-05-01T12:00:00Z`, with or without fractions) to Unix seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def is_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


TRUE_WORDS = frozenset({"true", "yes", "1", "on"})


@dataclass(frozen=True)
class PodAddress:
    """One pod as the sleep/wake calls reach it: status.podIP and the vLLM container port."""

    name: str
    ip: str  # "" until the pod has one
    port: int
    running: bool  # phase Running: its server may answer
    age_s: float  # since creationTimestamp

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


def pod_port(pod: Obj, port_name: str | None, default_port: int) -> int:
    """The containerPort named `port_name` in any container, else `default_port`."""
    if port_name:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") == port_name and p.get("containerPort"):
                    return int(p["containerPort"])
    return default_port


@dataclass(frozen=True)
class ReplicaState:
    """A Deployment's replicas as the API reports them at one moment."""

    desired: int  # spec.replicas: the current scale, what a decision changes
    ready: int
    starting: int
    terminating: int
    failed: int
    resource_version: str
    uid: str
    paused: bool  # the kill-switch annotation is set
    oldest_starting_s: float | None  # how long the oldest starting pod has been starting
    generation: int = 0
    sleeping: int = 0  # pool members asleep (set by `with_sleeping`; 0 without a sleeping pool)
    ready_pods: tuple[PodAddress, ...] = ()  # newest first
    starting_pods: tuple[PodAddress, ...] = ()
    sleeping_pods: tuple[PodAddress, ...] = ()

    def probe_candidates(self) -> tuple[PodAddress, ...]:
        """The starting pods that may be asleep: Running with an IP (a Pending pod is not)."""
        return tuple(p for p in self.starting_pods if p.running and p.ip)

    def with_sleeping(self, asleep: frozenset[str] | set[str]) -> ReplicaState:
        """This state with the starting pods named in `asleep` moved to `sleeping`; the oldest
        starting age recomputed over the pods still starting (a pool member that has slept an
        hour is no stuck start)."""
        from dataclasses import replace

        moved = tuple(p for p in self.starting_pods if p.name in asleep)
        still = tuple(p for p in self.starting_pods if p.name not in asleep)
        if not moved:
            return self
        oldest = max((p.age_s for p in still), default=None)
        return replace(
            self,
            starting=self.starting - len(moved),
            sleeping=self.sleeping + len(moved),
            starting_pods=still,
            sleeping_pods=self.sleeping_pods + moved,
            oldest_starting_s=oldest if still else None,
        )


def replica_state(
    deployment: Obj,
    pods: list[Obj],
    now_s: float,
    pause_annotation: str,
    *,
    port_name: str | None = None,
    default_port: int = 8000,
) -> ReplicaState:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    ready = starting = terminating = failed = 0
    oldest: float | None = None
    ready_pods: list[PodAddress] = []
    starting_pods: list[PodAddress] = []
    for pod in pods:
        pmeta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        phase = status.get("phase")
        created = parse_time_s(pmeta.get("creationTimestamp"))
        age = max(0.0, now_s - created) if created is not None else 0.0
        address = PodAddress(
            str(pmeta.get("name", "")),
            str(status.get("podIP") or ""),
            pod_port(pod, port_name, default_port),
            phase == "Running",
            age,
        )
        if pmeta.get("deletionTimestamp"):
            terminating += 1
        elif phase in ("Failed", "Succeeded"):
            failed += 1
        elif is_ready(pod):
            ready += 1
            ready_pods.append(address)
        else:
            starting += 1
            starting_pods.append(address)
            if created is not None:
                oldest = age if oldest is None else max(oldest, age)
    annotations = meta.get("annotations") or {}
    replicas = spec.get("replicas")
    return ReplicaState(
        desired=int(replicas if replicas is not None else 1),
        ready=ready,
        starting=starting,
        terminating=terminating,
        failed=failed,
        resource_version=str(meta.get("resourceVersion", "")),
        uid=str(meta.get("uid", "")),
        paused=str(annotations.get(pause_annotation, "")).strip().lower() in TRUE_WORDS,
        oldest_starting_s=oldest,
        generation=int(meta.get("generation") or 0),
        ready_pods=tuple(sorted(ready_pods, key=lambda p: (p.age_s, p.name))),
        starting_pods=tuple(starting_pods),
    )


@dataclass(frozen=True)
class ScaleState:
    """A Deployment's Scale subresource (the placeholder's: the warm-node pool)."""

    replicas: int  # spec.replicas
    ready: int  # status.replicas: pods that exist (a preempted placeholder is re-created Pending)
    resource_version: str


def scale_state(scale: Obj) -> ScaleState:
    return ScaleState(
        int((scale.get("spec") or {}).get("replicas") or 0),
        int((scale.get("status") or {}).get("replicas") or 0),
        str((scale.get("metadata") or {}).get("resourceVersion", "")),
    )


@dataclass
class Kube:
    """The controller's use of the API: reads with bounded backoff, the scale write, Events."""

    api: KubeApi
    backoff: Backoff = Backoff()
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random

    def _retry(self, fn: Callable[[], Any]) -> Any:
        return retry(fn, self.backoff, sleep=self.sleep, monotonic=self.monotonic, rng=self.rng)

    def observe(
        self,
        namespace: str,
        name: str,
        now_s: float,
        pause_annotation: str,
        *,
        port_name: str | None = None,
        default_port: int = 8000,
    ) -> ReplicaState:
        """Deployment + its pods; raises ControllerError when the API cannot be read."""
        d = self._retry(lambda: self.api.get_deployment(namespace, name))
        selector = selector_string((d.get("spec") or {}).get("selector"))
        pods = self._retry(lambda: self.api.list_pods(namespace, selector))
        return replica_state(
            d, pods, now_s, pause_annotation, port_name=port_name, default_port=default_port
        )

    def read_scale(self, namespace: str, name: str) -> ScaleState:
        """A Deployment's Scale (the placeholder's); raises ControllerError when unreadable."""
        return scale_state(self._retry(lambda: self.api.read_scale(namespace, name)))

    def apply(
        self,
        namespace: str,
        name: str,
        target: int,
        expected_current: int,
        resource_version: str,
        *,
        may_write: Callable[[], bool] = lambda: True,
    ) -> ApplyResult:
        """Set spec.replicas to `target` through the scale subresource, conditional on
        `resource_version`; `may_write` (leadership) is checked before every attempt."""
        start = self.monotonic()
        rv = resource_version
        attempts = 0
        last_error = ""
        while True:
            if not may_write():
                return ApplyResult(
                    "NotLeader", False, None, attempts, "lost leadership before writing"
                )
            attempts += 1
            body = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": int(target)}}
            delay: float | None = None
            try:
                out = self.api.patch_scale(namespace, name, body)
                new_rv = str((out.get("metadata") or {}).get("resourceVersion", ""))
                return ApplyResult("Scaled", True, int(target), attempts, None, new_rv)
            except ConflictError as e:
                last_error = str(e)
                try:
                    scale = self._retry(lambda: self.api.read_scale(namespace, name))
                except ControllerError as re_err:
                    return ApplyResult(
                        "Failed", False, None, attempts, f"conflict, then re-read failed: {re_err}"
                    )
                current = int((scale.get("spec") or {}).get("replicas") or 0)
                rv = str((scale.get("metadata") or {}).get("resourceVersion", ""))
                if current == target:
                    # Our earlier attempt landed (its answer was lost), or someone agrees.
                    return ApplyResult("AlreadyScaled", True, current, attempts, None, rv)
                if current != expected_current:
                    return ApplyResult(
                        "ForeignChange",
                        False,
                        current,
                        attempts,
                        f"spec.replicas changed to {current} by someone else (was {expected_current}); respecting it",
                    )
                delay = self.backoff.delay_s(attempts - 1, self.rng) * 0.5
            except TemporaryError as e:
                last_error = str(e)
                delay = self.backoff.delay_s(attempts - 1, self.rng)
                if e.delay_s is not None:
                    delay = max(delay, min(e.delay_s, self.backoff.max_delay_s))
            except PermanentError as e:
                return ApplyResult("Failed", False, None, attempts, str(e))
            elapsed = self.monotonic() - start
            if attempts >= self.backoff.attempts or elapsed + delay > self.backoff.deadline_s:
                return self._unanswered(namespace, name, target, attempts, last_error)
            self.sleep(delay)

    def _unanswered(
        self, namespace: str, name: str, target: int, attempts: int, last_error: str
    ) -> ApplyResult:
        """Out of attempts on errors that may have come after the write landed (a timeout, a
        lost connection, a 5xx): the Scale says whether it did. A write that landed is a write
        made (the rate limits count it); one that cannot be told apart counts too."""
        given_up = f"gave up after {attempts} attempts: {last_error}"
        try:
            scale = self._retry(lambda: self.api.read_scale(namespace, name))
        except ControllerError as e:
            return ApplyResult(
                "Failed",
                False,
                None,
                attempts,
                f"{given_up}; the Scale could not be re-read ({e}): the write may have landed",
                maybe_landed=True,
            )
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        rv = str((scale.get("metadata") or {}).get("resourceVersion", ""))
        if current == target:
            return ApplyResult(
                "AlreadyScaled",
                True,
                current,
                attempts,
                f"{given_up}; the Scale shows the write landed",
                rv,
            )
        return ApplyResult("Failed", False, current, attempts, given_up)


@dataclass(frozen=True)
class ApplyResult:
    outcome: str  # Scaled | AlreadyScaled | ForeignChange | NotLeader | Failed
    ok: bool
    replicas: int | None  # spec.replicas afterwards, when known
    attempts: int
    error: str | None = None
    resource_version: str | None = None
    maybe_landed: bool = False  # not confirmed either way: counted as made


class EventRecorder:
    """Kubernetes Events on a Deployment (core/v1 Event, as `kubectl describe` shows them).
    Best effort: one attempt, a failure is logged and never blocks a decision."""

    def __init__(
        self, api: KubeApi, *, component: str = "rlscale-controller", instance: str = ""
    ) -> None:
        self.api = api
        self.component = component
        self.instance = instance
        self._seq = itertools.count()

    def record(
        self,
        namespace: str,
        deployment: str,
        uid: str,
        reason: str,
        message: str,
        now_s: float,
        *,
        warning: bool = False,
    ) -> bool:
        stamp = _rfc3339(now_s)
        # client-go names events <object>.<unix nanos, hex>; the counter keeps two in one
        # nanosecond apart.
        name = f"{deployment}.{int(now_s * 1e9):x}{next(self._seq) % 4096:03x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.api.create_event(namespace, body)
            return True
        except ControllerError as e:
            log.warning(
                "event not recorded",
                extra={
                    "fields": {
                        "target": f"{namespace}/{deployment}",
                        "reason": reason,
                        "error": str(e),
                    }
                },
            )
            return False


def _rfc3339(t_s: float) -> str:
    if not math.isfinite(t_s):
        t_s = time.time()
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(t_s: float) -> str:
    """MicroTime, as Lease spec.renewTime/acquireTime carry it."""
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
