"""In-memory fakes for the controller's edges (the Kubernetes API, Prometheus), scripted policies,
and helpers to build a controller around them with an explicit clock."""

from __future__ import annotations

import copy
import itertools
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlscale.contract import ActionSpec, IntervalMetrics, ObservationSpec, observation_size
from rlscale.deploy import promql
from rlscale.deploy.config import ControllerConfig, parse_config
from rlscale.deploy.controller import Controller, build_controller, make_target
from rlscale.deploy.exporter import ControllerMetrics
from rlscale.deploy.metrics import MetricsReading
from rlscale.deploy.policies import BuiltPolicy, TargetPolicies
from rlscale.deploy.retry import ConflictError, NotFoundError, TemporaryError
from rlscale.policies.base import Decision
from rlscale.profiles.model import load_profile
from rlscale.safety import SafetyLimits

T0 = 1_700_000_000.0  # a fixed Unix time for timelines


def iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    op: str
    namespace: str
    name: str
    body: Any = None

    @property
    def is_write(self) -> bool:
        return self.op in ("patch_scale", "create_event", "create_lease", "replace_lease")


class FakeKube:
    """A `KubeApi` in memory: Deployments with resourceVersions, their pods, Events, Leases.
    `fail(op, *errors)` makes the next calls of `op` raise those errors in order."""

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self._failures: dict[str, list[Exception]] = {}
        self._lost_answers: dict[str, int] = {}
        self._rv = itertools.count(100)
        self._lock = threading.Lock()
        self.after_write: Callable[[str, str, int], None] | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def add_deployment(
        self, namespace: str, name: str, replicas: int, *, annotations: dict[str, str] | None = None
    ) -> None:
        self.deployments[(namespace, name)] = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}",
                "resourceVersion": str(next(self._rv)),
                "annotations": dict(annotations or {}),
                "generation": 1,
            },
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
        }
        self.set_pods(namespace, name, ready=replicas)

    def set_pods(
        self,
        namespace: str,
        name: str,
        *,
        ready: int = 0,
        starting: int = 0,
        terminating: int = 0,
        starting_since_s: float = T0,
    ) -> None:
        pods = []
        for i in range(ready + starting + terminating):
            kind = "ready" if i < ready else "starting" if i < ready + starting else "terminating"
            pod: dict[str, Any] = {
                "metadata": {
                    "name": f"{name}-abc-{i:05d}",
                    "labels": {"app": name},
                    "creationTimestamp": iso(starting_since_s if kind == "starting" else T0 - 3600),
                },
                "status": {
                    "phase": "Running" if kind != "starting" else "Pending",
                    "conditions": [
                        {"type": "Ready", "status": "True" if kind == "ready" else "False"}
                    ],
                },
            }
            if kind == "terminating":
                pod["metadata"]["deletionTimestamp"] = iso(T0)
            pods.append(pod)
        self.pods[(namespace, name)] = pods

    def scale_by_someone_else(self, namespace: str, name: str, replicas: int) -> None:
        with self._lock:
            d = self.deployments[(namespace, name)]
            d["spec"]["replicas"] = replicas
            d["metadata"]["resourceVersion"] = str(next(self._rv))

    def touch(self, namespace: str, name: str) -> None:
        """Bump the resourceVersion without changing spec.replicas (a status update)."""
        with self._lock:
            self.deployments[(namespace, name)]["metadata"]["resourceVersion"] = str(next(self._rv))

    def set_annotation(self, namespace: str, name: str, key: str, value: str | None) -> None:
        ann = self.deployments[(namespace, name)]["metadata"]["annotations"]
        if value is None:
            ann.pop(key, None)
        else:
            ann[key] = value

    def fail(self, op: str, *errors: Exception) -> None:
        self._failures.setdefault(op, []).extend(errors)

    def lose_answers(self, op: str, n: int) -> None:
        """The next `n` calls of `op` are carried out, then answer with a timeout (the answer
        was lost on the way back)."""
        self._lost_answers[op] = self._lost_answers.get(op, 0) + n

    def _answer(self, op: str) -> None:
        if self._lost_answers.get(op, 0) > 0:
            self._lost_answers[op] -= 1
            raise TemporaryError("API server unreachable: ReadTimeoutError (injected lost answer)")

    def replicas(self, namespace: str, name: str) -> int:
        return int(self.deployments[(namespace, name)]["spec"]["replicas"])

    def writes(self, op: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.is_write and (op is None or r.op == op)]

    # -- KubeApi -----------------------------------------------------------------------------------
    def _enter(self, op: str, namespace: str, name: str, body: Any = None) -> None:
        self.requests.append(Request(op, namespace, name, copy.deepcopy(body)))
        queue = self._failures.get(op)
        if queue:
            raise queue.pop(0)

    def _deployment(self, namespace: str, name: str) -> dict[str, Any]:
        d = self.deployments.get((namespace, name))
        if d is None:
            raise NotFoundError(f'404 deployments.apps "{name}" not found', status=404)
        return d

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        self._enter("get_deployment", namespace, name)
        with self._lock:
            return copy.deepcopy(self._deployment(namespace, name))

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._enter("list_pods", namespace, label_selector)
        app = dict(kv.split("=") for kv in label_selector.split(","))["app"]
        return copy.deepcopy(self.pods.get((namespace, app), []))

    def read_scale(self, namespace: str, name: str) -> dict[str, Any]:
        self._enter("read_scale", namespace, name)
        with self._lock:
            d = self._deployment(namespace, name)
            return {
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": d["metadata"]["resourceVersion"],
                },
                "spec": {"replicas": d["spec"]["replicas"]},
                "status": {"replicas": d["spec"]["replicas"]},
            }

    def patch_scale(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("patch_scale", namespace, name, body)
        with self._lock:
            d = self._deployment(namespace, name)
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent is not None and sent != d["metadata"]["resourceVersion"]:
                raise ConflictError("409 the object has been modified", status=409)
            d["spec"]["replicas"] = body["spec"]["replicas"]
            d["metadata"]["resourceVersion"] = str(next(self._rv))
            out = {
                "metadata": {"resourceVersion": d["metadata"]["resourceVersion"]},
                "spec": dict(body["spec"]),
            }
        if self.after_write is not None:
            self.after_write(namespace, name, body["spec"]["replicas"])
        self._answer("patch_scale")
        return out

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("create_event", namespace, body["metadata"]["name"], body)
        self.events.append(copy.deepcopy(body))
        return body

    def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        self._enter("get_lease", namespace, name)
        with self._lock:
            lease = self.leases.get((namespace, name))
            if lease is None:
                raise NotFoundError(f'404 leases "{name}" not found', status=404)
            return copy.deepcopy(lease)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("create_lease", namespace, body["metadata"]["name"], body)
        with self._lock:
            key = (namespace, body["metadata"]["name"])
            if key in self.leases:
                raise ConflictError("409 AlreadyExists", status=409)
            lease = copy.deepcopy(body)
            lease["metadata"]["resourceVersion"] = str(next(self._rv))
            self.leases[key] = lease
            return copy.deepcopy(lease)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("replace_lease", namespace, name, body)
        with self._lock:
            lease = self.leases.get((namespace, name))
            if lease is None:
                raise NotFoundError("404", status=404)
            if body["metadata"].get("resourceVersion") != lease["metadata"]["resourceVersion"]:
                raise ConflictError("409 the object has been modified", status=409)
            new = copy.deepcopy(body)
            new["metadata"]["resourceVersion"] = str(next(self._rv))
            self.leases[(namespace, name)] = new
            return copy.deepcopy(new)


class FakeProm:
    """A `PromQuery` answering the controller's combined query from `values[deployment][field]`
    (None or absent: no series). `newest_sample_age_s` sets the freshness answer; `error` makes
    every query raise."""

    def __init__(self, values: dict[str, float] | None = None) -> None:
        self.default: dict[str, float | None] = dict(values or healthy_values())
        self.values: dict[str, dict[str, float | None]] = {}
        self.newest_sample_age_s: float | None = 1.0
        self.error: Exception | None = None
        self.queries: list[str] = []

    def set(self, deployment: str, **values: float | None) -> None:
        self.values.setdefault(deployment, dict(self.default)).update(values)

    def query(self, expr: str, time_s: float) -> list[tuple[dict[str, str], float]]:
        self.queries.append(expr)
        if self.error is not None:
            raise self.error
        m = re.search(r'pod=~"([a-z0-9.-]+?)-\[a-z0-9\]', expr)
        values = self.values.get(m.group(1), self.default) if m else self.default
        out: list[tuple[dict[str, str], float]] = []
        hist_names = {promql.histogram_field(h): qs for h, (_, qs) in promql.HISTOGRAMS.items()}
        for f in re.findall(rf'"{promql.FIELD_LABEL}", "(\w+)"', expr):
            if f == promql.FRESHNESS:
                if self.newest_sample_age_s is not None:
                    out.append(({promql.FIELD_LABEL: f}, time_s - self.newest_sample_age_s))
            elif f in hist_names:
                out += _buckets(f, [values.get(q) for q in hist_names[f]])
            elif values.get(f) is not None:
                out.append(({promql.FIELD_LABEL: f}, float(values[f])))  # type: ignore[arg-type]
        return out


def _buckets(field: str, quantiles: list[float | None]) -> list[tuple[dict[str, str], float]]:
    """Bucket rates whose histogram_quantile at 0.5/0.95/0.99 gives exactly `quantiles` (bounds at
    the three values, cumulative 50/95/99/100); none if one is None; all-zero rates (no
    observations: NaN quantiles) if one is NaN."""
    if any(q is None for q in quantiles):
        return []
    qs = [float(q) for q in quantiles]  # type: ignore[arg-type]
    zero = any(math.isnan(q) for q in qs)
    bounds = [repr(q) for q in qs] if not zero else ["0.1", "1.0", "10.0"]
    counts = [50.0, 95.0, 99.0, 100.0]
    return [
        ({promql.FIELD_LABEL: field, "le": le}, 0.0 if zero else c)
        for le, c in zip([*bounds, "+Inf"], counts, strict=True)
    ]


def healthy_values(**over: float | None) -> dict[str, float | None]:
    v: dict[str, float | None] = dict(
        arrival_rps=40.0,
        prompt_tokens_per_s=40_000.0,
        output_tokens_per_s=8_000.0,
        requests_waiting=0.0,
        requests_running=60.0,
        kv_cache_usage=0.3,
        gpu_utilization_pct=60.0,
        ttft_p50_s=0.2,
        ttft_p95_s=0.4,
        ttft_p99_s=0.6,
        tpot_p50_s=0.02,
        tpot_p95_s=0.03,
        tpot_p99_s=0.04,
    )
    v.update(over)
    return v


def reading(
    now_s: float = T0,
    *,
    missing: Sequence[str] = (),
    stale: bool = False,
    error: str | None = None,
    required: Sequence[str] = promql.QUERY_FIELDS,
    coverage: Any = None,
    **over: float,
) -> MetricsReading:
    values = {k: (math.nan if v is None else float(v)) for k, v in healthy_values(**over).items()}
    for f in missing:
        values[f] = math.nan
    if error is not None:
        return MetricsReading.unavailable(now_s, error, tuple(required))
    extra = {"coverage": coverage} if coverage is not None else {}
    return MetricsReading(
        now_s,
        values,
        tuple(missing),
        tuple(required),
        age_s=90.0 if stale else 1.0,
        stale=stale,
        **extra,
    )


class ScriptedPolicy:
    """A Policy whose decision is `fn(window)`; records the windows it saw."""

    def __init__(
        self, fn: Callable[[Sequence[IntervalMetrics]], int | Decision], name: str = "scripted"
    ) -> None:
        self.fn = fn
        self.name = name
        self.calls: list[list[IntervalMetrics]] = []

    def reset(self) -> None:
        pass

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        self.calls.append(list(window))
        out = self.fn(window)
        return out if isinstance(out, Decision) else Decision(int(out), f"scripted -> {out}")


def constant(n: int, name: str = "scripted") -> ScriptedPolicy:
    return ScriptedPolicy(lambda w: n, name)


def raising(name: str = "broken") -> ScriptedPolicy:
    def boom(w: Sequence[IntervalMetrics]) -> int:
        raise RuntimeError("policy exploded")

    return ScriptedPolicy(boom, name)


def target_policies(
    primary: Any, fallback: Any = None, limits: SafetyLimits | None = None, window: int = 4
) -> TargetPolicies:
    lim = limits or SafetyLimits(min_replicas=1, max_replicas=10)
    return TargetPolicies(
        BuiltPolicy(primary, lim, window),
        BuiltPolicy(fallback, lim, 1) if fallback is not None else None,
        lim,
        window,
        None,
        load_profile("llama-3.1-8b-h100"),
        [],  # type: ignore[arg-type]
    )


def controller_config(**over: Any) -> ControllerConfig:
    data: dict[str, Any] = {
        "tick_s": 15,
        "leader_election": {"enabled": False},
        "exporter": {"enabled": False},
        "targets": [{"namespace": "llm", "deployment": "llama"}],
    }
    data.update(over)
    return parse_config(data)


@dataclass
class Harness:
    controller: Controller
    kube: FakeKube
    prom: FakeProm
    sleeps: list[float] = field(default_factory=list)

    def tick(self, now_s: float) -> Any:
        return self.controller.tick(now_s)


class HarnessFactory:
    """Builds controllers around fakes; `close()` stops them all (the fixture does, pass or fail)."""

    def __init__(self) -> None:
        self.made: list[Controller] = []

    def __call__(
        self,
        primary: Any,
        fallback: Any = None,
        *,
        limits: SafetyLimits | None = None,
        replicas: int = 3,
        config: ControllerConfig | None = None,
        window: int = 4,
        kube: FakeKube | None = None,
        prom: FakeProm | None = None,
        clock: Callable[[], float] = lambda: T0,
        sleep_api: Any = None,
    ) -> Harness:
        cfg = config or controller_config()
        kube = kube or FakeKube()
        for t in cfg.targets:
            if (t.namespace, t.deployment) not in kube.deployments:
                kube.add_deployment(t.namespace, t.deployment, replicas)
        prom = prom or FakeProm()
        pol = target_policies(primary, fallback, limits, window)
        targets = [make_target(cfg, t, pol, sleep_api=sleep_api) for t in cfg.targets]
        sleeps: list[float] = []
        c = build_controller(
            cfg,
            kube_api=kube,
            prom=prom,
            metrics=ControllerMetrics(),
            clock=clock,
            sleep=sleeps.append,
            identity="test-controller",
            targets=targets,
        )
        self.made.append(c)
        return Harness(c, kube, prom, sleeps)

    def close(self) -> None:
        for c in self.made:
            c.close(release=False)


def make_checkpoint(
    path: str | Path,
    *,
    profile: str = "llama-3.1-8b-h100",
    max_warm: int = 0,
    ttft_slo_s: float = 2.0,
    gpus_per_replica: int = 1,
    interval_s: float | None = None,
) -> Path:
    """A tiny PPO checkpoint folder (16-unit MLP, identity normalisation) trained for `profile`."""
    from rlscale.policies.checkpoint import ObsNorm, save_checkpoint
    from rlscale.training.ppo import build_actor

    spec = ObservationSpec(
        replica_capacity_rps=20.0,
        max_batch=256,
        ttft_slo_s=ttft_slo_s,
        tpot_slo_s=0.1,
        max_replicas=20,
        window=4,
    )
    size = observation_size(spec)
    actor = build_actor(size, [16], "tanh")
    return save_checkpoint(
        path,
        actor_state=actor.state_dict(),
        hidden=[16],
        activation="tanh",
        obs_norm=ObsNorm.identity(size),
        obs_spec=spec,
        act_spec=ActionSpec(max_warm=max_warm),
        limits=SafetyLimits(
            min_replicas=2,
            max_replicas=20,
            max_warm_replicas=max_warm,
            gpus_per_replica=gpus_per_replica,
        ),
        knob=False,
        extra={
            "profile": {"name": profile},
            **({"training_config": {"env": {"interval_s": interval_s}}} if interval_s else {}),
        },
    )
