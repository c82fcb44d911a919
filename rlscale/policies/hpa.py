"""The Kubernetes HorizontalPodAutoscaler (autoscaling/v2), configured from a real manifest.

The HPA is a pipeline (`pkg/controller/podautoscaler/horizontal.go`, `replica_calculator.go`):

1. per metric, a desired count from the metric's usage ratio (this module, `HPAPolicy.decide`);
2. the max over metrics; a metric that cannot be read never causes a scale-down;
3. the normalisation: with a `behavior` section, stabilisation windows and `Pods`/`Percent` rate
   limits per `periodSeconds` combined by `selectPolicy`; without one, the legacy rules (max over
   a 300 s window, at most max(2 x current, 4) per sync); then min/max replicas.

Step 3 is not done here: it is `rlscale.safety.clamp`, which the evaluator, the environment and
the live controller all apply after every policy. `HPAPolicy.limits` carries the manifest's
behaviour as `SafetyLimits` (`legacy_behavior=True` when the manifest has no `behavior`), so
whoever holds the policy clamps it with its own behaviour. Upstream's initial recommendation
(`recordInitialRecommendation`: the first scale-down waits out the down window) is the clamp
option `ClampState.empty(..., initial_recommendation=True)`. The policy itself is stateless.

The manifest is read strictly, as `kubectl apply --validate=strict` would: a field the API does
not have (`scaleUp.stabilisationWindowSeconds`, a typo that would otherwise leave the window at
its 0 s default) is an error naming it. Fields the API has and rlscale does not use
(`scaleTargetRef`, a metric's `selector`, `describedObject`, `status`, any `metadata`) are
accepted and ignored. `behavior.scaleUp.tolerance` / `scaleDown.tolerance` (Kubernetes 1.33+,
HPAConfigurableTolerance) set the per-direction tolerance; unset, the controller's 0.1.

Per metric (`replica_calculator.go`), with usage ratio u = value / target and tolerance bounds
1 - down <= u <= 1 + up (both inclusive, `Tolerances.isWithin`):

* `Pods` metric, `AverageValue` target (`calcPlainMetricReplicas`): the pods are grouped as
  `groupPods` does: deleted and Failed pods are ignored; Pending pods are "unready"; Running pods
  without a sample are "missing"; the rest have samples (S of them). u = (mean of the samples) /
  target. With no missing pods and no scale-up over unready ones: within tolerance keeps the
  current count, else ceil(u x S). Otherwise missing pods count at the target when u < 1 and at 0
  when u > 1 (not at all when u = 1), unready pods at 0 on a scale-up (ignored on a scale-down),
  giving u' over the N pods counted; u' within tolerance, or on the other side of 1 than u, keeps
  the current count, else ceil(u' x N) unless that moves against u'. Example: 4 pods with samples
  averaging 15 queued requests, target 10, none missing: u = 1.5 -> ceil(6.0) = 6.
* `Object` / `External` metric, `Value` target: u = value / target; ceil(u x ready pods)
  (`getUsageRatioReplicaCount`, ready = Running and Ready). `AverageValue` target
  (`GetObjectPerPodMetricReplicas` / `GetExternalPerPodMetricReplicas`): u = value / (target x
  pods), pods = the scale's status.replicas (created, not terminating), not spec.replicas;
  outside tolerance ceil(value / target). The value is the fleet-level reading: the total for
  summed metrics (queue, rates), the mean for averaged ones (utilisation, KV cache, latency).

What the HPA sees of the pods comes from one of two inputs:

* a pod-level view, `PodSample`s (phase, Ready, deleting, this pod's samples), passed as
  `HPAPolicy.decide(window, pods=...)`: the upstream grouping, exactly. The conformance suite
  (`tests/conformance/`) drives the upstream table tests through it;
* otherwise the fleet-level `IntervalMetrics`, which records totals and counts, not pods: every
  Ready pod is taken to have a sample (true in the simulator; a live source that can lose a pod's
  scrape should pass the pod view), and the `replicas_starting` pods are grouped by the visible
  option `starting_pods`: "pending" (default; upstream's treatment of a pod not yet running:
  ignored on a scale-down, 0 on a scale-up) or "missing" (a pod running but not answering
  /metrics yet, e.g. a model server loading weights: at the target on a scale-down). Set it with
  `config_from_manifest(..., starting_pods=...)` or the manifest annotation
  `rlscale.io/starting-pods`.

The arithmetic is upstream's: values become integer milli-units (a per-pod mean truncated to 1m),
ratios and ceil() are float64, so exact-boundary cases agree (10 pods at 0.9 x target are within
tolerance; 0.09 x 10 / 10 / 0.1 in floats is 0.8999999999999999 and would scale).

Differences from the real controller, each a choice:

* when every metric is unreadable the HPA skips the cycle and records no recommendation; here
  the policy proposes the current count, which the clamp records as a recommendation.
* spec.replicas outside [minReplicas, maxReplicas]: upstream sets the bound without computing
  metrics or recording a recommendation; here the proposal is computed and clamped to the bound
  (the same count) and recorded.
* the sync period (15 s by default) is the simulator's interval; the evaluator runs at 15 s.
* tolerance is applied here, to the usage ratio before rounding, as the replica calculator does
  (so `limits.tolerance` is 0: applying it again to the rounded count would differ, e.g. 5 pods at
  u = 1.09 -> within tolerance, keep 5; rounded first it would be ceil(5.45) = 6, a 20 % change).

Not modelled (refused with an error naming the field, or absent from the inputs): `Resource` and
`ContainerResource` metrics (CPU/memory, with their readiness and CPU-initialisation rules),
`Utilization` targets, scale to and from zero (minReplicas >= 1), metric samples for pods the pod
lister does not know, and the HPA conditions other than the clamp's reasons.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlscale.config import read_yaml_documents, validate_model
from rlscale.contract import IntervalMetrics
from rlscale.errors import InputError
from rlscale.policies.base import Decision
from rlscale.safety import (
    HPA_DEFAULT_DOWN,
    HPA_DEFAULT_UP,
    SafetyLimits,
    ScalingPolicy,
    ScalingRules,
)

MANIFEST_DIR = Path(__file__).parent / "manifests"
DEFAULT_MANIFEST = MANIFEST_DIR / "hpa-default.yaml"
DEFAULT_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
LEGACY_DOWNSCALE_WINDOW_S = (
    300.0  # --horizontal-pod-autoscaler-downscale-stabilization (no `behavior`)
)


@dataclass(frozen=True)
class MetricSource:
    """How a manifest metric name reads from `IntervalMetrics`.

    `aggregate` is "sum" when the field is a fleet total (the per-pod value is total / ready
    pods) and "mean" when it already is the mean over ready pods (or a service-level value such
    as a latency percentile, which every pod is taken to see)."""

    field: str
    aggregate: Literal["sum", "mean"]
    unit: str
    max_target: float | None = None  # targets above this are a units mistake


_GPU = MetricSource("gpu_utilization_pct", "mean", "percent, 0..100", 100.0)
_QUEUE = MetricSource("requests_waiting", "sum", "requests waiting")
_RUNNING = MetricSource("requests_running", "sum", "requests running")
_KV = MetricSource("kv_cache_usage", "mean", "fraction 0..1 (as vllm:gpu_cache_usage_perc)", 1.0)
_RATE = MetricSource("arrival_rps", "sum", "requests/s")

METRICS: dict[str, MetricSource] = {
    "gpu_utilization": _GPU,
    "gpu_utilization_pct": _GPU,
    "DCGM_FI_DEV_GPU_UTIL": _GPU,
    "request_queue_size": _QUEUE,
    "requests_waiting": _QUEUE,
    "num_requests_waiting": _QUEUE,
    "vllm:num_requests_waiting": _QUEUE,
    "requests_running": _RUNNING,
    "num_requests_running": _RUNNING,
    "vllm:num_requests_running": _RUNNING,
    "kv_cache_usage": _KV,
    "gpu_cache_usage_perc": _KV,
    "vllm:gpu_cache_usage_perc": _KV,
    "vllm:kv_cache_usage_perc": _KV,
    "arrival_rate": _RATE,
    "arrival_rps": _RATE,
    "request_rate": _RATE,
    "prompt_tokens_per_second": MetricSource("prompt_tokens_per_s", "sum", "tokens/s"),
    "generation_tokens_per_second": MetricSource("output_tokens_per_s", "sum", "tokens/s"),
    "ttft_p50_seconds": MetricSource("ttft_p50_s", "mean", "seconds"),
    "ttft_p95_seconds": MetricSource("ttft_p95_s", "mean", "seconds"),
    "ttft_p99_seconds": MetricSource("ttft_p99_s", "mean", "seconds"),
    "tpot_p95_seconds": MetricSource("tpot_p95_s", "mean", "seconds"),
    "tpot_p99_seconds": MetricSource("tpot_p99_s", "mean", "seconds"),
}

# Kubernetes resource.Quantity suffixes (decimal SI and binary).
_SUFFIX = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$"
)


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("200m", "10", "1.5k", "2Gi") as a float (0.2, 10, 1500, 2^31)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a quantity such as '70' or '500m', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"expected a quantity such as '70' or '500m', got {value!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


# --- the manifest, as far as we read it ---------------------------------------------------------


class _K8s(BaseModel):
    # Strict: a misspelt Kubernetes field (`stabilisationWindowSeconds`) is an error, never a
    # silent default. Fields Kubernetes has that we do not read are declared (as `Any`) so a real
    # manifest still loads; the object metadata and `status` are taken as they come.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class MetricIdentifier(_K8s):
    name: str = Field(min_length=1)
    selector: dict[str, Any] | None = (
        None  # a LabelSelector; the simulator has one series per metric
    )


class MetricTarget(_K8s):
    type: Literal["Utilization", "Value", "AverageValue"]
    value: float | None = None
    average_value: float | None = Field(default=None, alias="averageValue")
    average_utilization: int | None = Field(default=None, alias="averageUtilization")

    @field_validator("value", "average_value", mode="before")
    @classmethod
    def _quantity(cls, v: Any) -> Any:
        return None if v is None else parse_quantity(v)

    @model_validator(mode="after")
    def _has_its_value(self) -> MetricTarget:
        need = {
            "Value": "value",
            "AverageValue": "average_value",
            "Utilization": "average_utilization",
        }[self.type]
        got = getattr(self, need)
        if got is None:
            key = {
                "value": "value",
                "average_value": "averageValue",
                "average_utilization": "averageUtilization",
            }[need]
            raise ValueError(f"target type {self.type} needs `{key}`")
        if got <= 0:
            raise ValueError(f"target must be > 0, got {got}")
        return self

    @property
    def amount(self) -> float:
        return float(self.value if self.type == "Value" else self.average_value)  # type: ignore[arg-type]


class MetricSourceSpec(_K8s):
    """A `pods` or `external` metric source (an `object` one also names its `describedObject`)."""

    metric: MetricIdentifier
    target: MetricTarget


class ObjectMetricSourceSpec(MetricSourceSpec):
    described_object: dict[str, Any] | None = Field(default=None, alias="describedObject")


class MetricSpec(_K8s):
    type: Literal["Pods", "Object", "External", "Resource", "ContainerResource"]
    pods: MetricSourceSpec | None = None
    object: ObjectMetricSourceSpec | None = None
    external: MetricSourceSpec | None = None
    resource: dict[str, Any] | None = None  # refused in `_resolve_metric`, with the alternative
    container_resource: dict[str, Any] | None = Field(default=None, alias="containerResource")


class HPAScalingPolicy(_K8s):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(gt=0, le=1800, alias="periodSeconds")


class HPAScalingRules(_K8s):
    stabilization_window_seconds: int | None = Field(
        default=None, ge=0, le=3600, alias="stabilizationWindowSeconds"
    )
    select_policy: Literal["Max", "Min", "Disabled"] | None = Field(
        default=None, alias="selectPolicy"
    )
    # API validation: "must specify at least one Policy" (an empty list would mean no rate limit)
    policies: list[HPAScalingPolicy] | None = Field(default=None, min_length=1)
    # Kubernetes 1.33+ (HPAConfigurableTolerance): this direction's tolerance, a quantity
    # ("50m" = 0.05); unset, the controller's --horizontal-pod-autoscaler-tolerance
    tolerance: float | None = Field(default=None, ge=0)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance_quantity(cls, v: Any) -> Any:
        return None if v is None else parse_quantity(v)

    def to_rules(self, default: ScalingRules) -> ScalingRules:
        """Fill unset fields from the HPA defaults, as the API server's defaulting does
        (`GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules`)."""
        return ScalingRules(
            stabilization_window_s=(
                default.stabilization_window_s
                if self.stabilization_window_seconds is None
                else float(self.stabilization_window_seconds)
            ),
            select_policy=self.select_policy or default.select_policy,
            policies=(
                default.policies
                if self.policies is None
                else tuple(
                    ScalingPolicy(type=p.type, value=p.value, period_s=p.period_seconds)
                    for p in self.policies
                )
            ),
        )


class HPABehavior(_K8s):
    scale_up: HPAScalingRules | None = Field(default=None, alias="scaleUp")
    scale_down: HPAScalingRules | None = Field(default=None, alias="scaleDown")


class HPASpec(_K8s):
    scale_target_ref: dict[str, Any] | None = Field(
        default=None, alias="scaleTargetRef"
    )  # the simulator scales one fleet
    min_replicas: int = Field(default=1, ge=1, alias="minReplicas")
    max_replicas: int = Field(ge=1, alias="maxReplicas")
    metrics: list[MetricSpec] = Field(min_length=1)
    behavior: HPABehavior | None = None

    @model_validator(mode="after")
    def _bounds(self) -> HPASpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas = {self.max_replicas}, must be >= minReplicas ({self.min_replicas})"
            )
        return self


class _Metadata(BaseModel):
    # ObjectMeta as `kubectl get -o yaml` writes it (uid, labels, managedFields, ...): kept as it
    # comes; we read the name and the annotations (the tuned manifests record their search there).
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = "hpa"
    annotations: dict[str, str] = Field(default_factory=dict)


class HPAManifest(_K8s):
    api_version: Literal["autoscaling/v2"] = Field(alias="apiVersion")
    kind: Literal["HorizontalPodAutoscaler"]
    metadata: _Metadata = _Metadata()
    spec: HPASpec
    status: dict[str, Any] | None = None  # what the cluster's controller last did; not an input


# --- the resolved configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class HPAMetric:
    """One manifest metric resolved against `METRICS`."""

    name: str
    type: Literal["Pods", "Object", "External"]
    target_type: Literal["Value", "AverageValue"]
    target: float
    source: MetricSource


@dataclass(frozen=True)
class Tolerances:
    """The usage-ratio dead band per direction (upstream `Tolerances`): within
    1 - scale_down <= u <= 1 + scale_up (inclusive) the count stays."""

    scale_down: float = DEFAULT_TOLERANCE
    scale_up: float = DEFAULT_TOLERANCE

    def is_within(self, ratio: float) -> bool:
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


StartingPods = Literal["pending", "missing"]
STARTING_PODS_ANNOTATION = "rlscale.io/starting-pods"


@dataclass(frozen=True)
class HPAConfig:
    name: str
    metrics: tuple[HPAMetric, ...]
    limits: SafetyLimits
    tolerances: Tolerances = Tolerances()
    # how the fleet-level view groups `replicas_starting` (see the module docstring)
    starting_pods: StartingPods = "pending"
    source: str = ""
    annotations: tuple[tuple[str, str], ...] = ()


def config_from_manifest(
    data: Any,
    where: str = "<manifest>",
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    starting_pods: StartingPods | None = None,
) -> HPAConfig:
    """Validate a parsed manifest (a dict) and resolve its metrics; `InputError` naming `where`,
    the field and what was expected on any problem. `tolerance` is the controller's flag
    (--horizontal-pod-autoscaler-tolerance), used for a direction whose `behavior` sets none;
    `starting_pods` overrides the manifest's `rlscale.io/starting-pods` annotation."""
    if not isinstance(data, dict):
        raise InputError(
            where, "expected a HorizontalPodAutoscaler manifest (a YAML mapping) at the top level"
        )
    m = validate_model(data, HPAManifest, where)
    metrics = []
    for i, spec in enumerate(m.spec.metrics):
        metrics.append(_resolve_metric(spec, where, f"spec.metrics.{i}"))
    if m.spec.behavior is None:
        # autoscaling/v2 leaves a missing `behavior` nil (SetDefaults_HorizontalPodAutoscalerBehavior
        # only fills a given one) and the controller normalises with its legacy rules
        limits = SafetyLimits(
            min_replicas=m.spec.min_replicas,
            max_replicas=m.spec.max_replicas,
            tolerance=0.0,
            scale_down=ScalingRules(stabilization_window_s=LEGACY_DOWNSCALE_WINDOW_S),
            legacy_behavior=True,
        )
        tolerances = Tolerances(tolerance, tolerance)
    else:
        beh = m.spec.behavior
        up, down = beh.scale_up or HPAScalingRules(), beh.scale_down or HPAScalingRules()
        limits = SafetyLimits(
            min_replicas=m.spec.min_replicas,
            max_replicas=m.spec.max_replicas,
            tolerance=0.0,  # applied by the policy, to the usage ratio (see the module docstring)
            scale_up=up.to_rules(HPA_DEFAULT_UP),
            scale_down=down.to_rules(HPA_DEFAULT_DOWN),
        )
        tolerances = Tolerances(
            scale_down=tolerance if down.tolerance is None else down.tolerance,
            scale_up=tolerance if up.tolerance is None else up.tolerance,
        )
    annotations = m.metadata.annotations
    return HPAConfig(
        name=m.metadata.name,
        metrics=tuple(metrics),
        limits=limits,
        tolerances=tolerances,
        starting_pods=starting_pods or _starting_pods_annotation(annotations, where),
        source=where,
        annotations=tuple(sorted(annotations.items())),
    )


def _starting_pods_annotation(annotations: Mapping[str, str], where: str) -> StartingPods:
    chosen = annotations.get(STARTING_PODS_ANNOTATION, "pending")
    if chosen == "pending":
        return "pending"
    if chosen == "missing":
        return "missing"
    raise InputError(
        where,
        f"expected 'pending' or 'missing', got {chosen!r}",
        field=f"metadata.annotations.{STARTING_PODS_ANNOTATION}",
    )


def _resolve_metric(spec: MetricSpec, where: str, loc: str) -> HPAMetric:
    if spec.type in ("Resource", "ContainerResource"):
        raise InputError(
            where,
            f"metric type {spec.type} (CPU/memory of the pods) is not supported: LLM serving scales on "
            f"serving metrics; use a Pods, Object or External metric named one of: {', '.join(sorted(METRICS))}",
            field=f"{loc}.type",
        )
    key = spec.type[0].lower() + spec.type[1:]
    src = getattr(spec, key)
    if src is None:
        raise InputError(
            where, f"metric type {spec.type} needs a `{key}` section", field=f"{loc}.{key}"
        )
    name = src.metric.name
    source = METRICS.get(name)
    if source is None:
        raise InputError(
            where,
            f"unsupported metric {name!r}; supported metric names: {', '.join(sorted(METRICS))}",
            field=f"{loc}.{key}.metric.name",
        )
    t = src.target
    if t.type == "Utilization":
        raise InputError(
            where,
            f"target type Utilization is only for Resource metrics; use AverageValue for {name!r}",
            field=f"{loc}.{key}.target.type",
        )
    if spec.type == "Pods" and t.type != "AverageValue":
        raise InputError(
            where,
            f"a Pods metric needs an AverageValue target, got {t.type}",
            field=f"{loc}.{key}.target.type",
        )
    if source.max_target is not None and t.amount > source.max_target:
        raise InputError(
            where,
            f"target {t.amount:g} for {name!r} is out of range: it is a {source.unit}"
            + (" (did you mean 800m for 80 %?)" if source.max_target == 1.0 else ""),
            field=f"{loc}.{key}.target",
        )
    return HPAMetric(name=name, type=spec.type, target_type=t.type, target=t.amount, source=source)  # type: ignore[arg-type]


def load_hpa_manifest(
    path: str | Path,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    starting_pods: StartingPods | None = None,
) -> HPAConfig:
    """Read a HorizontalPodAutoscaler YAML file (the first HPA document in a multi-document file)."""
    p = Path(path)
    docs = read_yaml_documents(p, what="HPA manifest")
    if not docs:
        raise InputError(str(p), "empty file, expected a HorizontalPodAutoscaler manifest")
    hpas = [d for d in docs if isinstance(d, dict) and d.get("kind") == "HorizontalPodAutoscaler"]
    return config_from_manifest(
        hpas[0] if hpas else docs[0], str(p), tolerance=tolerance, starting_pods=starting_pods
    )


# --- what the HPA sees of the pods ---------------------------------------------------------------


@dataclass(frozen=True)
class PodSample:
    """One pod as the HPA's pod lister and metrics API see it: its phase, Ready condition,
    deletion mark, and its samples by `IntervalMetrics` field name (`requests_waiting`,
    `gpu_utilization_pct`, ...); a field absent (or NaN) is a pod with no sample for it."""

    name: str
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Running"
    ready: bool = True
    deleting: bool = False
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PodGroups:
    """One metric's pods, grouped as `groupPods` does for a non-CPU metric."""

    total: float  # sum of the samples
    with_samples: int  # pods counted with their sample
    missing: int  # running pods without a sample
    unready: int  # pending pods


def group_pods(pods: Sequence[PodSample], field_name: str) -> PodGroups:
    total_m, with_samples, missing, unready = 0, 0, 0, 0
    for p in pods:
        if p.deleting or p.phase == "Failed":
            continue  # ignored
        if p.phase == "Pending":
            unready += 1
            continue
        v = p.values.get(field_name)
        if v is None or not math.isfinite(v):
            missing += 1
            continue
        total_m += _milli(v)  # each sample a milli-quantity, as the metrics API returns it
        with_samples += 1
    return PodGroups(total_m / 1000.0, with_samples, missing, unready)


def fleet_groups(metric: HPAMetric, m: IntervalMetrics, starting_pods: StartingPods) -> PodGroups:
    """The grouping the fleet-level record allows: every Ready pod with a sample (the per-pod
    values are not known, only their total), the starting pods as `starting_pods` says."""
    ready = _count(m.replicas_ready)
    starting = _count(m.replicas_starting)
    raw = getattr(m, metric.source.field)
    total = raw if metric.source.aggregate == "sum" else raw * ready
    missing, unready = (starting, 0) if starting_pods == "missing" else (0, starting)
    return PodGroups(float(total), ready, missing, unready)


def _count(x: float) -> int:
    return int(round(x)) if math.isfinite(x) else 0


def _milli(x: float) -> int:
    """A value as the integer milli-units upstream computes in (`MilliValue()`; at least 1m for
    a target, which must be > 0)."""
    return int(round(x * 1000.0))


def _target_milli(x: float) -> int:
    return max(1, _milli(x))


# --- the algorithm --------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRecommendation:
    name: str
    replicas: int | None  # None: the metric could not be read
    value: float  # per-pod value (Pods / AverageValue) or fleet value (Value)
    ratio: float
    note: str = ""


def plain_metric_replicas(
    g: PodGroups, target: float, current: int, tol: Tolerances
) -> tuple[int, float, str]:
    """`calcPlainMetricReplicas` on grouped pods (at least one sample); returns (replicas, usage
    ratio, note). In upstream's arithmetic: integer milli-units, the mean truncated to 1m
    (`GetMetricUsageRatio`), the ratio and ceil() in float64."""
    target_m = _target_milli(target)
    total_m, counted = _milli(g.total), g.with_samples
    ratio = (total_m // counted) / target_m
    scale_up_with_unready = g.unready > 0 and ratio > 1.0
    if not scale_up_with_unready and g.missing == 0:
        if tol.is_within(ratio):
            return current, ratio, "within tolerance"
        return math.ceil(ratio * g.with_samples), ratio, ""
    if g.missing:
        # at the target on a scale-down, at 0 on a scale-up; at exactly 1 they are left out
        if ratio < 1.0:
            total_m, counted = total_m + g.missing * target_m, counted + g.missing
        elif ratio > 1.0:
            counted += g.missing
    if scale_up_with_unready:
        counted += g.unready  # at 0
    new_ratio = (total_m // counted) / target_m
    waiting = f"{g.missing} missing, {g.unready} pending"
    if tol.is_within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current, ratio, f"within tolerance with {waiting}"
    new = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
        return current, ratio, "direction would flip"
    return new, ratio, f"{waiting} pods counted"


def metric_recommendation(
    metric: HPAMetric,
    m: IntervalMetrics,
    current: int,
    tolerances: Tolerances = Tolerances(),
    *,
    pods: Sequence[PodSample] | None = None,
    starting_pods: StartingPods = "pending",
) -> MetricRecommendation:
    """The desired replica count for one metric (None when it cannot be read). `current` is
    spec.replicas; `pods`, when given, is the pod-level view (else `m`'s counts are used)."""
    if metric.type == "Pods":
        g = (
            group_pods(pods, metric.source.field)
            if pods is not None
            else fleet_groups(metric, m, starting_pods)
        )
        if g.with_samples <= 0 or not math.isfinite(g.total):
            return MetricRecommendation(
                metric.name, None, float("nan"), float("nan"), "no pod with a sample"
            )
        per_pod = g.total / g.with_samples
        n, ratio, note = plain_metric_replicas(g, metric.target, current, tolerances)
        return MetricRecommendation(metric.name, n, per_pod, ratio, note)
    # Object / External: the fleet-level value (the total of a summed metric, the mean of an
    # averaged one)
    fleet = getattr(m, metric.source.field)
    if not math.isfinite(fleet):
        return MetricRecommendation(metric.name, None, float("nan"), float("nan"), "no value")
    if pods is not None:
        ready = sum(1 for p in pods if p.phase == "Running" and p.ready)
        status = sum(1 for p in pods if not p.deleting and p.phase in ("Pending", "Running"))
    else:
        ready = _count(m.replicas_ready)
        status = ready + _count(m.replicas_starting)
    usage_m, target_m = _milli(fleet), _target_milli(metric.target)
    if metric.target_type == "AverageValue":
        # GetObjectPerPodMetricReplicas / GetExternalPerPodMetricReplicas: over status.replicas
        if status <= 0:
            return MetricRecommendation(metric.name, None, fleet, float("nan"), "no pods")
        ratio = usage_m / (target_m * status)
        if tolerances.is_within(ratio):
            return MetricRecommendation(metric.name, status, fleet, ratio, "within tolerance")
        return MetricRecommendation(metric.name, math.ceil(usage_m / target_m), fleet, ratio)
    ratio = usage_m / target_m
    if current == 0:
        return MetricRecommendation(metric.name, math.ceil(ratio), fleet, ratio)
    if tolerances.is_within(ratio):
        return MetricRecommendation(metric.name, current, fleet, ratio, "within tolerance")
    return MetricRecommendation(metric.name, math.ceil(ratio * ready), fleet, ratio)


def desired_replicas(
    config: HPAConfig, m: IntervalMetrics, *, pods: Sequence[PodSample] | None = None
) -> tuple[int, str, list[MetricRecommendation]]:
    """Steps 1-2 of the HPA: per-metric desired counts, their max, and the missing-metric rule
    (`computeReplicasForMetrics`): if every metric is unreadable, or some are and the readable
    ones would scale down, keep the current count."""
    current = _current(m)
    recs = [
        metric_recommendation(
            metric, m, current, config.tolerances, pods=pods, starting_pods=config.starting_pods
        )
        for metric in config.metrics
    ]
    valid = [r for r in recs if r.replicas is not None]
    parts = [
        f"{r.name} {r.value:.3g}{'/pod' if mt.type == 'Pods' else ''} vs {mt.target:g} -> {r.replicas}"
        + (f" ({r.note})" if r.note else "")
        if r.replicas is not None
        else f"{r.name} unavailable ({r.note})"
        for r, mt in zip(recs, config.metrics, strict=True)
    ]
    if not valid:
        return (
            current,
            f"{config.name}: no metric readable, holding {current} [{'; '.join(parts)}]",
            recs,
        )
    best = max(r.replicas for r in valid if r.replicas is not None)
    if len(valid) < len(recs) and best < current:
        return (
            current,
            f"{config.name}: some metrics unavailable, not scaling down [{'; '.join(parts)}]",
            recs,
        )
    return int(best), f"{config.name}: desired {best} [{'; '.join(parts)}]", recs


def _current(m: IntervalMetrics) -> int:
    """The scale's spec.replicas (what the HPA calls currentReplicas)."""
    if math.isfinite(m.replicas_desired):
        return int(round(m.replicas_desired))
    return _count(m.replicas_ready) + _count(m.replicas_starting)


class HPAPolicy:
    """The HPA's metric-to-replicas step as a `Policy`; its behaviour is `self.limits`, applied by
    whoever clamps (the evaluator, the environment, the controller)."""

    def __init__(self, config: HPAConfig, name: str = "hpa") -> None:
        self.config = config
        self.name = name
        self.limits = config.limits

    @classmethod
    def from_manifest(
        cls,
        path: str | Path = DEFAULT_MANIFEST,
        name: str = "hpa",
        *,
        starting_pods: StartingPods | None = None,
    ) -> HPAPolicy:
        return cls(load_hpa_manifest(path, starting_pods=starting_pods), name=name)

    def reset(self) -> None:
        pass

    def decide(
        self, window: Sequence[IntervalMetrics], *, pods: Sequence[PodSample] | None = None
    ) -> Decision:
        """The proposal for the last interval; `pods` is the optional pod-level view of it."""
        if not window:
            raise ValueError("HPAPolicy.decide needs at least one IntervalMetrics")
        n, reason, _ = desired_replicas(self.config, window[-1], pods=pods)
        return Decision(n, reason)
