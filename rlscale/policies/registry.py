"""The one policy factory: a spec string (or its parsed `PolicySpec`) -> a `PolicyFactory`, used by
`simulate`, `evaluate`, `train`, `tune`, the sandbox and the live controller alike.

Grammar: `KIND[:ARG][#KEY=VALUE,...]`, e.g. `hpa`, `hpa:my-hpa.yaml`, `static:4`, `target:0.7`,
`threshold#gpu_up_pct=80`, `ppo:checkpoints/ppo-llama-3.1-8b-h100#slo_target=0.995`.

| spec                 | policy                                                        | limits (clamps)                 |
|----------------------|---------------------------------------------------------------|---------------------------------|
| `hpa`, `hpa:PATH`    | Kubernetes HPA from an autoscaling/v2 manifest (default: `manifests/hpa-default.yaml`) | the manifest's |
| `threshold[:PATH]`   | threshold rule; `ThresholdConfig` fields from a YAML or as `#field=value` | its min/max (2 / 20) |
| `tuned`              | the tuned HPA for the profile (`manifests/tuned-<profile>.yaml`) | the manifest's               |
| `predictive`         | forecast one cold start ahead                                 | the default + 120 s down-window |
| `target:U`           | constant target utilisation U of demand in replicas at the observed request mix (the action map with a fixed u) | the default limits |
| `capacity`           | the run-time shield's rule alone, no policy behind it; options: any `ShieldConfig` field, `scale_up_window_s` | the default + the checkpoints' scale-down clamp (+ that scale-up window) |
| `static:N`           | fixed count N                                                 | the default limits, widened to N |
| `static`             | fixed count serving the workload's peak minute within the SLO | the default limits              |
| `oracle`             | clairvoyant DP plan (sees the workload)                       | the default limits              |
| `ppo:PATH`           | trained checkpoint; options `slo_weight` or `slo_target`, `warm`, `u` | the limits it was trained under |

`hpa`, `tuned`, `target` and `predictive` take `#warm=N` too: a standby pool held at N beside the
rule (`policies.warm`; the seed system's baseline is `#warm=2`), as `ppo:PATH#warm=N` holds a
checkpoint's. What a pool member is, is the cluster's: `SimConfig.standby_tier`.

`static` and `oracle` read the workload (its peak, its future), so they exist only offline; the
live controller, which has no workload, gets a one-line error naming them. Every other policy is
built the same way offline and live.

Each factory carries its own `SafetyLimits`: a policy is evaluated as it would be deployed (an HPA
with its behaviour, a rule with its bounds). The default limits (min 2, max 20 unless told
otherwise) have no stabilisation or rate limit: the policies that use them pace themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlscale.contract import DEFAULT_SLO_TARGET, rows_needed
from rlscale.errors import InputError
from rlscale.policies.base import Policy
from rlscale.safety import SafetyLimits, ScalingRules

if TYPE_CHECKING:
    from rlscale.policies.hpa import HPAConfig
    from rlscale.profiles.model import ServiceProfile
    from rlscale.serving.model import SimConfig
    from rlscale.traces.workload import Workload

POLICY_NAMES: tuple[str, ...] = (
    "hpa",
    "threshold",
    "tuned",
    "predictive",
    "target",
    "capacity",
    "static",
    "oracle",
    "ppo",
)
_USAGE = "hpa[:PATH], threshold[:PATH], tuned, predictive, target:U, capacity, static[:N], oracle, ppo:PATH[#slo_weight=W|slo_target=T,warm=N,u=U]; hpa, tuned, target, predictive take #warm=N"
# The options each kind takes (threshold: any `ThresholdConfig` field). `slo_target` is the SLO
# attainment a planner or sizer aims for; `target_scale` multiplies every metric target of an HPA
# manifest (below 1 scales out earlier): the dials `rlscale evaluate --frontier` sweeps.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "ppo": ("slo_weight", "slo_target", "warm", "u"),
    "oracle": ("slo_target",),
    "predictive": ("slo_target", "warm"),
    "static": ("slo_target",),
    "hpa": ("target_scale", "warm"),
    "tuned": ("target_scale", "warm"),
    "target": ("warm",),
}
# the rules that take `#warm=N`: a fixed standby pool of N beside the rule (`policies.warm`)
_WARM_RULES = ("hpa", "tuned", "target", "predictive")


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec: `kind`, its argument (a path, a count, a utilisation) and options."""

    kind: str
    arg: str = ""
    options: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, text: str, where: str = "policy") -> PolicySpec:
        """Parse and check a spec string at once (unknown kinds, bad counts and option names are
        errors here, before any evaluation runs)."""
        head, _, opts = str(text).strip().partition("#")
        kind, _, arg = head.partition(":")
        spec = cls(kind.strip().lower(), arg.strip(), _parse_options(opts, text, where))
        spec.check(where)
        return spec

    def check(self, where: str = "policy") -> None:
        def fail(problem: str) -> None:
            raise InputError(where, f"{self}: {problem}", field="policy")

        if self.kind == "rule":
            fail(
                f"the target-utilisation rule is spelled target:U, e.g. target:{self.arg or '0.7'}"
            )
        if self.kind not in POLICY_NAMES:
            fail(f"unknown policy {self.kind!r}; valid: {_USAGE}")
        if self.kind in ("ppo", "target") and not self.arg:
            fail(
                f"expected {self.kind}:{'PATH to a checkpoint folder' if self.kind == 'ppo' else 'U, a utilisation in (0, 1]'}"
            )
        if self.kind in ("tuned", "predictive", "oracle", "capacity") and self.arg:
            fail(f"{self.kind} takes no argument")
        if self.kind == "static" and self.arg and not (self.arg.isdigit()):
            fail(f"expected static:N with N a replica count >= 0, got {self.arg!r}")
        if self.kind == "target":
            try:
                u = float(self.arg)
            except ValueError:
                u = math.nan
            if not 0 < u <= 1:
                fail(f"expected target:U with 0 < U <= 1, got {self.arg!r}")
        allowed = (
            _config_fields(self.kind)
            if self.kind in ("threshold", "capacity")
            else _OPTIONS.get(self.kind, ())
        )
        for key, value in self.options:
            if key not in allowed:
                fail(
                    f"unknown option {key!r}"
                    + (
                        f"; allowed: {', '.join(allowed)}"
                        if allowed
                        else f"; {self.kind} takes none"
                    )
                )
            if key == "slo_target" and not 0 < value < 1:
                fail(f"expected slo_target=S with 0 < S < 1, got {value:g}")
            if key == "target_scale" and not 0 < value < math.inf:
                fail(f"expected target_scale=F with F > 0, got {value:g}")
            if key == "scale_up_window_s" and not 0 <= value <= 3600:
                fail(f"expected scale_up_window_s=S with 0 <= S <= 3600, got {value:g}")
            if key == "warm" and not (value >= 0 and float(value).is_integer()):
                fail(f"expected warm=N with N a pool size >= 0, got {value:g}")
            if key == "slo_target" and self.kind == "static" and self.arg:
                fail("static:N serves N replicas; slo_target sizes a bare static")

    def option(self, key: str) -> float | None:
        return dict(self.options).get(key)

    def __str__(self) -> str:
        text = self.kind + (f":{self.arg}" if self.arg else "")
        if self.options:
            text += "#" + ",".join(f"{k}={v:g}" for k, v in self.options)
        return text


def _parse_options(text: str, spec: str, where: str) -> tuple[tuple[str, float], ...]:
    out: list[tuple[str, float]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out.append((key.strip(), float(value)))
        except ValueError:
            raise InputError(
                where, f"{spec}: option {item!r}: expected KEY=NUMBER", field="policy"
            ) from None
    return tuple(out)


def _config_fields(kind: str) -> tuple[str, ...]:
    """The options of the kinds whose options are their config's fields."""
    if kind == "capacity":
        from rlscale.serving.shield import ShieldConfig

        return (*ShieldConfig.model_fields, "scale_up_window_s")
    from rlscale.policies.threshold import ThresholdConfig

    return tuple(ThresholdConfig.model_fields)


@dataclass
class PolicyFactory:
    """`factory(seed) -> Policy`, with the limits to clamp it by, the intervals of history it reads,
    and where it came from."""

    spec: str
    name: str
    limits: SafetyLimits
    build: Callable[[int], Policy]
    info: dict[str, Any] = field(default_factory=dict)
    window: int = 1

    def __call__(self, seed: int) -> Policy:
        return self.build(seed)


def default_limits(
    min_replicas: int = 2, max_replicas: int = 20, gpus_per_replica: int = 1
) -> SafetyLimits:
    return SafetyLimits(
        min_replicas=min_replicas, max_replicas=max_replicas, gpus_per_replica=gpus_per_replica
    )


@dataclass(frozen=True)
class _Context:
    """What a builder may read: the service, the default limits and the SLO; the workload only
    offline (None live)."""

    profile: ServiceProfile
    limits: SafetyLimits
    config: SimConfig
    slo_target: float
    workload: Workload | None
    initial_replicas: int | None

    def need_workload(self, spec: PolicySpec, why: str) -> Workload:
        if self.workload is None:
            raise InputError(
                str(spec),
                f"{why}, so it runs only offline (`rlscale evaluate`, `simulate`)",
                field="policy",
            )
        return self.workload


def make_policy(
    spec: str | PolicySpec,
    *,
    profile: ServiceProfile,
    workload: Workload | None = None,
    limits: SafetyLimits | None = None,
    config: SimConfig | None = None,
    slo_target: float = DEFAULT_SLO_TARGET,
    initial_replicas: int | None = None,
) -> PolicyFactory:
    """Resolve a policy spec for one profile (and, offline, the workload the run replays: only the
    oracle reads its future and `static` its peak). `initial_replicas` is the fleet the run starts
    with (the oracle plans from it)."""
    from rlscale.serving.model import SimConfig

    ps = spec if isinstance(spec, PolicySpec) else PolicySpec.parse(spec)
    lim = limits or default_limits(gpus_per_replica=profile.gpus_per_replica)
    target = ps.option("slo_target") or slo_target
    ctx = _Context(profile, lim, config or SimConfig(), target, workload, initial_replicas)
    factory = _BUILDERS[ps.kind](ps, ctx)
    if (
        ps.kind in ("oracle", "predictive", "static", "hpa", "tuned", "target", "capacity")
        and ps.options
    ):
        # a dial setting is part of the name, so the points of a sweep stay apart in a report
        factory.name += str(ps)[str(ps).index("#") :]
        factory.info.update(dict(ps.options))
    warm = ps.option("warm")
    if ps.kind in _WARM_RULES and warm is not None:
        factory = _with_warm_pool(factory, int(warm))
    return factory


def _with_warm_pool(factory: PolicyFactory, n: int) -> PolicyFactory:
    """The rule with a standby pool held at n, its limits widened to let the pool stand by."""
    from rlscale.policies.warm import FixedWarmPool, limits_with_pool

    inner = factory.build
    return replace(
        factory,
        limits=limits_with_pool(factory.limits, n),
        build=lambda seed: FixedWarmPool(inner(seed), n),
    )


def _hpa_config(path: Path, ps: PolicySpec) -> HPAConfig:
    """The manifest's config, its every metric target times `target_scale` (its behaviour kept)."""
    from rlscale.policies.hpa import load_hpa_manifest

    cfg = load_hpa_manifest(path)
    factor = ps.option("target_scale")
    if factor is None:
        return cfg
    return replace(cfg, metrics=tuple(replace(m, target=m.target * factor) for m in cfg.metrics))


def _hpa(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.policies.hpa import DEFAULT_MANIFEST, HPAPolicy

    path = Path(ps.arg) if ps.arg else DEFAULT_MANIFEST
    cfg = _hpa_config(path, ps)
    name = f"hpa:{path.stem}" if ps.arg else "hpa"
    return PolicyFactory(
        str(ps), name, cfg.limits, lambda seed: HPAPolicy(cfg, name=name), {"manifest": str(path)}
    )


def _threshold(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.config import validate_model
    from rlscale.policies.threshold import ThresholdConfig, ThresholdPolicy

    cfg = ThresholdConfig.load(ps.arg) if ps.arg else ThresholdConfig()
    if ps.options:
        cfg = validate_model({**cfg.model_dump(), **dict(ps.options)}, ThresholdConfig, str(ps))
    name = f"threshold:{Path(ps.arg).stem}" if ps.arg else "threshold"
    limits = ThresholdPolicy(cfg).limits
    return PolicyFactory(
        str(ps),
        name,
        limits,
        lambda seed: ThresholdPolicy(cfg, name=name),
        {"config": cfg.model_dump()},
    )


def _tuned(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.policies.hpa import HPAPolicy
    from rlscale.policies.tuned import tuned_manifest_path

    path = tuned_manifest_path(ctx.profile)
    if not path.exists():
        raise InputError(path, "no tuned manifest shipped; run `rlscale tune` first")
    cfg = _hpa_config(path, ps)
    return PolicyFactory(
        str(ps),
        "tuned",
        cfg.limits,
        lambda seed: HPAPolicy(cfg, name="tuned"),
        {"manifest": str(path)},
    )


def _predictive(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.policies.predictive import SCALE_DOWN_WINDOW_S, PredictiveConfig, PredictivePolicy

    limits = ctx.limits.model_copy(
        update={"scale_down": ScalingRules(stabilization_window_s=SCALE_DOWN_WINDOW_S)}
    )
    cfg = PredictiveConfig(
        slo_target=ctx.slo_target,
        ttft_slo_s=ctx.config.ttft_slo_s,
        tpot_slo_s=ctx.config.tpot_slo_s,
        ttft_slo_s_per_1k_tokens=ctx.config.ttft_slo_s_per_1k_tokens,
    )
    return PolicyFactory(
        str(ps),
        "predictive",
        limits,
        lambda seed: PredictivePolicy(ctx.profile, cfg, limits=limits),
    )


def _target(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.policies.target import MIX_WINDOW, TargetUtilisationPolicy
    from rlscale.serving.capacity import observation_spec

    u = float(ps.arg)
    spec = observation_spec(
        ctx.profile,
        max_replicas=ctx.limits.max_replicas,
        window=MIX_WINDOW,
        ttft_slo_s=ctx.config.ttft_slo_s,
        tpot_slo_s=ctx.config.tpot_slo_s,
        ttft_slo_s_per_1k_tokens=ctx.config.ttft_slo_s_per_1k_tokens,
    )
    return PolicyFactory(
        str(ps),
        f"target:{u:g}",
        ctx.limits,
        lambda seed: TargetUtilisationPolicy(u, spec),
        {"u": u},
    )


def _capacity(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.config import validate_model
    from rlscale.policies.capacity import SCALE_DOWN, CapacityPolicy
    from rlscale.serving.shield import ShieldConfig

    options = dict(ps.options)
    up_window_s = options.pop("scale_up_window_s", 0.0)
    cfg = validate_model(options, ShieldConfig, str(ps))
    # `scale_up_window_s`: scale up only to the lowest count of that window (the HPA's scale-up
    # stabilisation), e.g. the 30 s of the 8B checkpoint's limits, to compare the two as clamped alike
    up = ScalingRules(stabilization_window_s=up_window_s)
    limits = ctx.limits.model_copy(update={"scale_down": SCALE_DOWN, "scale_up": up})
    c = ctx.config
    return PolicyFactory(
        str(ps),
        "capacity",
        limits,
        lambda seed: CapacityPolicy(
            ctx.profile,
            cfg,
            interval_s=c.interval_s,
            ttft_slo_s=c.ttft_slo_s,
            tpot_slo_s=c.tpot_slo_s,
            ttft_slo_s_per_1k_tokens=c.ttft_slo_s_per_1k_tokens,
        ),
        {"shield": cfg.model_dump()},
    )


def _static(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.policies.static import StaticPolicy

    if ps.arg:
        # a count asked for is the count served: the bounds widen to it rather than clip it
        n = int(ps.arg)
        limits = ctx.limits.model_copy(
            update={
                "min_replicas": min(ctx.limits.min_replicas, n),
                "max_replicas": max(ctx.limits.max_replicas, n),
            }
        )
        name = f"static:{n}"
    else:
        from rlscale.policies.static import replicas_for_peak

        peak = replicas_for_peak(
            ctx.need_workload(ps, "static sizes for the workload's peak minute"),
            ctx.profile,
            ctx.config,
            ctx.slo_target,
        )
        n, limits, name = (
            min(max(peak, ctx.limits.min_replicas), ctx.limits.max_replicas),
            ctx.limits,
            "static",
        )
    return PolicyFactory(str(ps), name, limits, lambda seed: StaticPolicy(n), {"replicas": n})


def _oracle(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.policies.oracle import OraclePolicy, plan_oracle

    workload = ctx.need_workload(ps, "the oracle plans on the workload's future")
    plan = plan_oracle(
        ctx.profile,
        workload,
        config=ctx.config,
        limits=ctx.limits,
        slo_target=ctx.slo_target,
        initial_replicas=ctx.initial_replicas,
    )
    info = {
        "predicted_slo_attainment": plan.predicted_attainment,
        "planned_slo_attainment": plan.planned_attainment,
        "lookahead_bins": plan.lookahead_bins,
        "lagrange_multiplier": plan.lam,
    }
    return PolicyFactory(str(ps), "oracle", ctx.limits, lambda seed: OraclePolicy(plan), info)


def _ppo(ps: PolicySpec, ctx: _Context) -> PolicyFactory:
    from rlscale.policies.checkpoint import load_policy

    name = f"ppo:{Path(ps.arg).name}" + (str(ps)[str(ps).index("#") :] if ps.options else "")
    warm = ps.option("warm")
    # One load (hashes verified once); the actor is a deterministic MLP with no state between
    # decisions, so every seed (and every live target) can share it.
    policy = load_policy(
        ps.arg,
        slo_weight=ps.option("slo_weight"),
        slo_target=ps.option("slo_target"),
        warm=int(warm) if warm is not None else None,
        u=ps.option("u"),
        name=name,
    )
    return PolicyFactory(
        str(ps),
        name,
        policy.limits,
        lambda seed: policy,
        {"checkpoint": ps.arg},
        window=rows_needed(policy.obs_spec),
    )


_BUILDERS: dict[str, Callable[[PolicySpec, _Context], PolicyFactory]] = {
    "hpa": _hpa,
    "threshold": _threshold,
    "tuned": _tuned,
    "predictive": _predictive,
    "target": _target,
    "capacity": _capacity,
    "static": _static,
    "oracle": _oracle,
    "ppo": _ppo,
}
