"""The controller's config: one YAML file, validated where it enters; errors name the field.

    tick_s: 15
    dry_run: false
    prometheus: {url: http://prometheus-operated.monitoring:9090}
    leader_election: {enabled: true, lease_name: rlscale-controller}
    targets:
      - namespace: llm
        deployment: llama-8b
        profile: llama-3.1-8b-h100
        policy: {checkpoint: /checkpoints/ppo-8b}
        fallback: {rule: hpa}
        slo: {ttft_s: 2.0, tpot_s: 0.1}
        limits: {min_replicas: 2, max_replicas: 16, scale_down: {stabilization_window_s: 300}}

A target with a warm pool says what a pool member is (`StandbyConfig`, `rlscale/deploy/standby.py`):

        standby: {tier: sleeping, port_name: http}                    # vLLM sleep mode
        standby: {tier: warm_node, placeholder: vllm-placeholder}    # placeholder Deployment

See `kubernetes/configmap.yaml` and the README for every field. `load_config(path)` raises
`InputError(path, problem, field="targets.0.limits.max_replicas")`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rlscale.config import read_yaml, validate_model
from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.deploy import promql
from rlscale.errors import InputError
from rlscale.profiles.standby import StandbyTier
from rlscale.safety import SafetyLimits
from rlscale.serving.shield import ShieldConfig
from rlscale.slo import SLOClass

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyChoice(_Strict):
    """Who proposes, in either spelling of the one policy grammar (`rlscale.policies.registry`):
    a spec string, `policy: "ppo:/checkpoints/ppo-8b#slo_weight=5"` or `policy: hpa`, or the
    structured form, `{checkpoint: PATH, slo_weight: W}`, `{checkpoint: PATH, slo_target: T}` or
    `{rule: NAME, options: {...}}`.
    Both become one `registry.PolicySpec` (`rlscale.deploy.policies.policy_spec`)."""

    spec: str | None = None
    checkpoint: str | None = None
    rule: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    slo_weight: float | None = Field(
        default=None, gt=0
    )  # the PPO cost/SLO knob, if trained with it
    # or the SLO-attainment target, if trained with that knob (`envs.lagrange`)
    slo_target: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"spec": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> PolicyChoice:
        if sum(x is not None for x in (self.spec, self.checkpoint, self.rule)) != 1:
            raise ValueError(
                "give exactly one of a spec string (e.g. 'hpa', 'ppo:PATH'), `checkpoint` (a PPO checkpoint folder) "
                "or `rule` (a rule policy name)"
            )
        if self.rule is None and self.options:
            raise ValueError(
                "`options` apply to rule policies; a checkpoint carries its own configuration"
            )
        if self.spec is not None and (self.slo_weight is not None or self.slo_target is not None):
            raise ValueError(
                "with a spec string, write the knob in it: 'ppo:PATH#slo_weight=W' or "
                "'ppo:PATH#slo_target=T'"
            )
        if self.slo_weight is not None and self.slo_target is not None:
            raise ValueError("give slo_weight or slo_target, not both (one knob)")
        return self

    @property
    def label(self) -> str:
        return self.spec or (
            f"checkpoint:{self.checkpoint}" if self.checkpoint else f"rule:{self.rule}"
        )


class SLOConfig(_Strict):
    """The target's SLO class (`rlscale.slo.SLOClass`): TTFT `ttft_s` + `ttft_s_per_1k_tokens`
    per 1,000 prompt tokens, TPOT `tpot_s`.

    What the controller can measure: vLLM's TTFT histogram is not split by prompt length, so the
    live guards (the shield's breach check) compare the observed TTFT p95 with the class's target
    at the interval's observed mean prompt (prompt tokens / requests, `ttft_target_s`; PromQL:
    `rlscale.deploy.promql.ttft_target_query`), and size capacity with the per-length target as
    the simulator does. A long-prompt minute thus gets a looser limit than a chat minute; a
    mixed minute is held to its mean, not request by request."""

    ttft_s: float = Field(
        default=DEFAULT_TTFT_SLO_S, gt=0
    )  # p95 time to first token the service promises (at 0 prompt tokens with a slope)
    tpot_s: float = Field(default=DEFAULT_TPOT_SLO_S, gt=0)  # p95 time per output token
    ttft_s_per_1k_tokens: float = Field(default=0.0, ge=0)  # TTFT added per 1,000 prompt tokens

    def slo_class(self) -> SLOClass:
        return SLOClass(self.ttft_s, self.ttft_s_per_1k_tokens, self.tpot_s)

    def ttft_target_s(self, mean_prompt_tokens: float) -> float:
        """The TTFT limit for an interval whose requests averaged this many prompt tokens."""
        return float(self.slo_class().ttft_target_s(float(mean_prompt_tokens)))


class MetricsConfig(_Strict):
    """Where a target's IntervalMetrics come from. `queries` overrides the default PromQL of a
    field (see rlscale.deploy.promql); `null` or "" means "not collected": the field is NaN and
    never required."""

    selector: str = promql.DEFAULT_SELECTOR
    gpu_selector: str = promql.DEFAULT_SELECTOR
    rate_window: str = "1m"
    queries: dict[str, str | None] = Field(default_factory=dict)
    # Fields the policy needs; None: every collected field. A missing one sends the decision to
    # the fallback policy (if its `fallback_required` fields are there) or holds.
    required: tuple[str, ...] | None = None
    fallback_required: tuple[str, ...] = ("arrival_rps", "requests_waiting", "requests_running")
    max_staleness_s: float = Field(default=60.0, gt=0)
    freshness_query: str | None = promql.FRESHNESS_QUERY  # null: no staleness check
    # The vLLM gauge whose samples tell which pods the rate fields cover (new, gone, gapped or
    # frozen pods: `rlscale.deploy.promql.coverage_queries`); null: no such checks.
    coverage_series: str | None = "num_requests_running"

    @field_validator("queries")
    @classmethod
    def _known_fields(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for name, q in v.items():
            if name not in promql.QUERY_FIELDS:
                raise ValueError(
                    f"unknown field {name!r}; fields read from Prometheus: {', '.join(promql.QUERY_FIELDS)}"
                )
            if q:
                _check_template(q, f"queries.{name}")
        return v

    @field_validator("required", "fallback_required")
    @classmethod
    def _required_known(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in v or ():
            if name not in promql.QUERY_FIELDS:
                raise ValueError(
                    f"unknown field {name!r}; fields read from Prometheus: {', '.join(promql.QUERY_FIELDS)}"
                )
        return v

    @field_validator("selector", "gpu_selector", "freshness_query")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v:
            _check_template(v, "template")
        return v

    @field_validator("coverage_series")
    @classmethod
    def _series_name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[a-z_][a-z0-9_]*$", v):
            raise ValueError(
                f"{v!r}: expected a vLLM series name without the `vllm:` prefix "
                "(e.g. num_requests_running)"
            )
        return v

    @field_validator("rate_window")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not promql.is_duration(v):
            raise ValueError(f"{v!r} is not a PromQL duration (e.g. 1m, 90s)")
        return v

    @model_validator(mode="after")
    def _required_collected(self) -> MetricsConfig:
        collected = set(self.collected_fields)
        for name in (*(self.required or ()), *self.fallback_required):
            if name not in collected:
                raise ValueError(f"field {name!r} is required but its query is disabled")
        return self

    @property
    def collected_fields(self) -> tuple[str, ...]:
        return tuple(
            f for f in promql.QUERY_FIELDS if self.queries.get(f, promql.DEFAULT_QUERIES[f])
        )

    def histograms(self) -> dict[str, tuple[str, dict[str, float]]]:
        """histogram -> (bucket-rate template, {field: quantile}) for the percentile fields left at
        their default (an overridden field is queried on its own; a disabled one not at all)."""
        out = {}
        for name, (template, quantiles) in promql.HISTOGRAMS.items():
            fields = {f: q for f, q in quantiles.items() if f not in self.queries}
            if fields:
                out[name] = (template, fields)
        return out

    @property
    def required_fields(self) -> tuple[str, ...]:
        return self.required if self.required is not None else self.collected_fields

    @property
    def rate_window_s(self) -> float:
        return promql.duration_s(self.rate_window)

    def templates(self) -> dict[str, str]:
        """field -> PromQL template, for the collected fields not served by `histograms()`."""
        from_histograms = {f for _, fields in self.histograms().values() for f in fields}
        out = {}
        for f in promql.QUERY_FIELDS:
            q = self.queries.get(f, promql.DEFAULT_QUERIES[f])
            if q and f not in from_histograms:
                out[f] = q
        return out


def _check_template(text: str, where: str) -> None:
    unknown = promql.unknown_placeholders(text)
    if unknown:
        raise ValueError(
            f"{where}: unknown placeholder(s) {', '.join(sorted('{{' + u + '}}' for u in unknown))}; "
            f"known: {', '.join(sorted('{{' + p + '}}' for p in promql.PLACEHOLDERS))}"
        )


class DrainConfig(_Strict):
    """When a Ready pod may be put to sleep: vLLM's level-1 sleep drops the KV cache, so a pod is
    slept only once its own `/metrics` reads no more than `max_requests` requests running plus
    waiting; a busier pod (or one whose metrics cannot be read) is deferred to the next tick."""

    max_requests: int = Field(default=0, ge=0)
    metrics_path: str = "/metrics"

    @field_validator("metrics_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r}: expected a URL path starting with /")
        return v


class StandbyConfig(_Strict):
    """How the live controller actuates the target's warm pool (`rlscale.deploy.standby`).

    `sleeping`: pool members are the target's own pods in vLLM sleep mode (spec.replicas = serving
    + pool), reached over HTTP at the pod IP and the container port named `port_name` (`port`
    when no container names it). `warm_node` / `preloaded_node`: the pool is the `placeholder`
    Deployment's replicas (pause pods holding one replica's GPUs), scaled through `/scale`."""

    tier: StandbyTier
    port_name: str = "http"
    port: int = Field(default=8000, ge=1, le=65535)
    placeholder: str | None = None
    request_timeout_s: float = Field(default=30.0, gt=0, le=300)  # a wake loads weights back
    probe_timeout_s: float = Field(default=2.0, gt=0, le=30)  # /is_sleeping and /metrics reads
    workers: int = Field(default=8, ge=1, le=64)  # pods called at once
    drain: DrainConfig = DrainConfig()

    @field_validator("placeholder")
    @classmethod
    def _placeholder_name(cls, v: str | None) -> str | None:
        if v is not None and not (len(v) <= 253 and _DNS1123_SUBDOMAIN.match(v)):
            raise ValueError(f"{v!r} is not a valid Deployment name (lowercase RFC 1123 subdomain)")
        return v

    @model_validator(mode="after")
    def _tier_needs(self) -> StandbyConfig:
        if self.tier != "sleeping" and self.placeholder is None:
            raise ValueError(
                f"tier {self.tier!r} needs `placeholder`: the Deployment of pause pods that holds the nodes"
            )
        if self.tier == "sleeping" and self.placeholder is not None:
            raise ValueError("tier 'sleeping' uses the target's own pods; drop `placeholder`")
        return self


class TargetConfig(_Strict):
    """One Deployment the controller scales."""

    namespace: str
    deployment: str
    profile: str = "llama-3.1-8b-h100"  # shipped profile name or YAML path
    policy: PolicyChoice = PolicyChoice(rule="hpa")
    # Used when the policy raises, or when fields it requires are missing but the fallback's are
    # there; null: hold instead.
    fallback: PolicyChoice | None = PolicyChoice(rule="hpa")
    slo: SLOConfig | None = None  # null: the checkpoint's SLO, else 2 s TTFT / 0.1 s TPOT (p95)
    # The warm pool's actuation; null: no pool (a policy or limits that size one are refused).
    # (Before `limits`: the limits' check reads it.)
    standby: StandbyConfig | None = None
    limits: SafetyLimits | None = (
        None  # null: the policy's own (checkpoint, HPA manifest, rule bounds)
    )
    dry_run: bool | None = None  # null: the controller-wide `dry_run`
    window: int | None = Field(default=None, ge=1, le=64)  # intervals of history the policy sees
    metrics: MetricsConfig = MetricsConfig()
    # A change of spec.replicas by someone else is respected: no writes for this long after it.
    manual_override_hold_s: float = Field(default=600.0, ge=0)
    # No scale-up on top of pods still starting, unless they have been starting this long
    # (stuck: no GPU node, image pull back-off); null: no guard.
    starting_guard_s: float | None = Field(default=900.0, ge=0)
    # Serve a checkpoint trained with a warm pool without one (every scale-up a cold start).
    ignore_warm_pool: bool = False
    # The run-time shield (`rlscale.serving.shield`): null = on with its defaults for a
    # checkpoint, off for a rule (an HPA stays the real HPA); false = off; true = on with its
    # defaults; a mapping = on with these `ShieldConfig` fields (e.g. {floor_utilisation: 0.9}).
    shield: bool | ShieldConfig | None = None

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        if not (len(v) <= 63 and _DNS1123_LABEL.match(v)):
            raise ValueError(f"{v!r} is not a valid namespace name (lowercase RFC 1123 label)")
        return v

    @field_validator("deployment")
    @classmethod
    def _name(cls, v: str) -> str:
        if not (len(v) <= 253 and _DNS1123_SUBDOMAIN.match(v)):
            raise ValueError(f"{v!r} is not a valid Deployment name (lowercase RFC 1123 subdomain)")
        return v

    @field_validator("limits")
    @classmethod
    def _warm_pool_needs_standby(
        cls, v: SafetyLimits | None, info: ValidationInfo
    ) -> SafetyLimits | None:
        if v is not None and v.max_warm_replicas > 0 and info.data.get("standby") is None:
            raise ValueError(
                f"max_warm_replicas = {v.max_warm_replicas} needs a `standby:` section on the target saying what "
                "a pool member is (tier: sleeping | warm_node | preloaded_node); add one or set it to 0"
            )
        return v

    @model_validator(mode="after")
    def _placeholder_not_target(self) -> TargetConfig:
        if self.standby is not None and self.standby.placeholder == self.deployment:
            raise ValueError(f"standby.placeholder {self.deployment!r} is the target itself")
        return self

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.deployment}"

    @property
    def learned_policy(self) -> bool:
        """The primary is a trained checkpoint (either spelling), not a rule."""
        p = self.policy
        spec = (p.spec or "").strip().lower()
        return p.checkpoint is not None or spec.startswith("ppo:")

    def shield_config(self) -> ShieldConfig | None:
        """The shield this target runs under (None: unshielded); `shield` above."""
        if isinstance(self.shield, ShieldConfig):
            return self.shield
        if self.shield is None:
            return ShieldConfig() if self.learned_policy else None
        return ShieldConfig() if self.shield else None


class PrometheusConfig(_Strict):
    url: str = "http://prometheus-operated.monitoring.svc:9090"
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    concurrency: int = Field(default=8, ge=1, le=64)  # queries in flight at once
    bearer_token_file: str | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r}: expected an http:// or https:// URL")
        return v.rstrip("/")


class RetryConfig(_Strict):
    attempts: int = Field(default=4, ge=1, le=10)
    base_delay_s: float = Field(default=0.2, gt=0, le=10)
    max_delay_s: float = Field(default=2.0, gt=0, le=30)
    deadline_s: float = Field(default=5.0, gt=0, le=60)


class KubernetesConfig(_Strict):
    kubeconfig: str | None = None  # null: in-cluster service account, else ~/.kube/config
    context: str | None = None
    request_timeout_s: float = Field(default=5.0, gt=0, le=60)
    retry: RetryConfig = RetryConfig()


class LeaderElectionConfig(_Strict):
    """A coordination.k8s.io/v1 Lease; client-go's defaults (15 s / 10 s / 2 s)."""

    enabled: bool = True
    namespace: str | None = None  # null: the targets' namespace (required if they span several)
    lease_name: str = "rlscale-controller"
    lease_duration_s: float = Field(default=15.0, gt=0)
    renew_deadline_s: float = Field(default=10.0, gt=0)
    retry_period_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionConfig:
        # A leader stops acting renew_deadline after its last renewal; a standby takes over no
        # sooner than lease_duration after it saw that renewal. The gap is what keeps two
        # controllers from acting at once.
        if self.renew_deadline_s >= self.lease_duration_s:
            raise ValueError(
                f"renew_deadline_s = {self.renew_deadline_s}, must be < lease_duration_s ({self.lease_duration_s})"
            )
        if self.retry_period_s >= self.renew_deadline_s:
            raise ValueError(
                f"retry_period_s = {self.retry_period_s}, must be < renew_deadline_s ({self.renew_deadline_s})"
            )
        return self


class ExporterConfig(_Strict):
    enabled: bool = True
    address: str = "0.0.0.0"
    port: int = Field(default=9102, ge=0, le=65535)  # 0: any free port


class ControllerConfig(_Strict):
    tick_s: float = Field(default=15.0, ge=0.05, le=600)
    dry_run: bool = False
    identity: str | None = None  # leader-election identity; null: <hostname>_<pid>
    events: bool = True  # Kubernetes Events on the Deployment for every (would-be) scale
    pause_annotation: str = "rlscale.io/paused"
    prometheus: PrometheusConfig = PrometheusConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    leader_election: LeaderElectionConfig = LeaderElectionConfig()
    exporter: ExporterConfig = ExporterConfig()
    targets: list[TargetConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ControllerConfig:
        seen: set[str] = set()
        for t in self.targets:
            if t.key in seen:
                raise ValueError(f"target {t.key} is listed twice")
            seen.add(t.key)
        le = self.leader_election
        if le.enabled and le.namespace is None and len({t.namespace for t in self.targets}) > 1:
            spaces = ", ".join(sorted({t.namespace for t in self.targets}))
            raise ValueError(
                f"leader_election.namespace is required when targets span namespaces ({spaces})"
            )
        return self

    @property
    def lease_namespace(self) -> str:
        return self.leader_election.namespace or self.targets[0].namespace

    def target_dry_run(self, target: TargetConfig) -> bool:
        return self.dry_run if target.dry_run is None else target.dry_run


def parse_config(data: Any, where: str = "<config>") -> ControllerConfig:
    if not isinstance(data, dict):
        raise InputError(where, "expected a mapping of controller settings at the top level")
    return validate_model(data, ControllerConfig, where)


def load_config(path: str | Path) -> ControllerConfig:
    return parse_config(read_yaml(path), str(path))
