"""A target's policies for the live controller, built at start-up through the one policy factory
(`rlscale.policies.registry.make_policy`), exactly as `rlscale evaluate` builds them.

A target names its policy in either spelling of the one grammar (`config.PolicyChoice`): a spec
string (`hpa`, `predictive`, `ppo:/ckpt#slo_weight=5`) or the structured form (`{rule: hpa,
options: {manifest: PATH}}`, `{checkpoint: PATH, slo_weight: W}`); `policy_spec` turns both into
one `PolicySpec`. Policies that read the workload (`oracle`, `static` without a count) are refused:
live, there is no workload to read.

A checkpoint is loaded with `rlscale.policies.checkpoint.load_policy`, which refuses a tampered
folder (hashes), a missing normalisation file and a contract/feature mismatch; here it is also
refused when it was trained for another profile, SLO or GPU count than the target declares.

A warm pool (`KIND#warm=N`, a checkpoint trained with `max_warm > 0`) is served only by a target
with a `standby:` section, which says what a pool member is and how it is actuated; the pool is
clamped by the target's `limits.max_warm_replicas` (the policy's own when the target gives no
limits). Without `standby:` such a policy is refused with one line, unless the target says
`ignore_warm_pool: true` (served without a pool: every scale-up a cold start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlscale.deploy.config import PolicyChoice, SLOConfig, TargetConfig
from rlscale.errors import InputError
from rlscale.policies.base import Policy
from rlscale.policies.registry import PolicyFactory, PolicySpec, make_policy
from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.safety import SafetyLimits
from rlscale.serving.model import SimConfig

DEFAULT_WINDOW = 8
# What each rule's structured `options` may hold, and the spec argument an option becomes.
_RULE_ARG_OPTION = {"hpa": "manifest", "threshold": "config", "static": "replicas", "target": "u"}


@dataclass
class BuiltPolicy:
    policy: Policy
    limits: SafetyLimits  # the limits it was designed or trained under
    window: int  # intervals of history it reads
    slo: SLOConfig | None = None  # the SLO a checkpoint was trained for
    warm_pool: int = 0  # warm replicas it sizes (a checkpoint's ActionSpec.max_warm)
    standby_tier: str | None = None  # what a pool member was in training (a checkpoint's)
    interval_s: float | None = None  # the interval a checkpoint was trained on (its tick)


@dataclass
class TargetPolicies:
    primary: BuiltPolicy
    fallback: BuiltPolicy | None
    limits: SafetyLimits  # what the target is clamped by
    window: int
    slo: SLOConfig
    profile: ServiceProfile
    warnings: list[str]


def policy_spec(choice: PolicyChoice, where: str, field: str) -> PolicySpec:
    """The one `PolicySpec` a target's policy entry means, in whichever spelling it was written."""
    if choice.spec is not None:
        return PolicySpec.parse(choice.spec, where)
    if choice.checkpoint is not None:
        options = tuple(
            (k, v)
            for k, v in (("slo_weight", choice.slo_weight), ("slo_target", choice.slo_target))
            if v is not None
        )
        return PolicySpec("ppo", choice.checkpoint, options)
    rule = (choice.rule or "").strip().lower()
    opts: dict[str, Any] = dict(choice.options)
    arg_key = _RULE_ARG_OPTION.get(rule)
    arg = opts.pop(arg_key) if arg_key in opts else None
    if rule == "static" and not (isinstance(arg, int) and not isinstance(arg, bool) and arg >= 0):
        raise InputError(
            where,
            f"expected options.replicas: N (a count >= 0), got {arg!r}",
            field=f"{field}.options.replicas",
        )
    if opts and rule != "threshold":
        allowed = [arg_key] if arg_key else []
        raise InputError(
            where,
            f"unknown option(s) {sorted(opts)} for rule {rule!r}; allowed: {allowed}",
            field=f"{field}.options",
        )
    if rule == "threshold" and opts:
        return _threshold_spec(arg, opts, where, field)
    spec = PolicySpec(rule, "" if arg is None else str(arg))
    try:
        spec.check(where)
    except InputError as e:
        raise InputError(where, e.problem, field=f"{field}.rule") from None
    return spec


def _threshold_spec(config: Any, opts: dict[str, Any], where: str, field: str) -> PolicySpec:
    """Inline `ThresholdConfig` fields, validated here so the error names the option."""
    from rlscale.config import validate_model
    from rlscale.policies.threshold import ThresholdConfig

    if config is not None:
        raise InputError(
            where,
            "give either options.config (a file) or inline ThresholdConfig fields",
            field=f"{field}.options",
        )
    try:
        validate_model(opts, ThresholdConfig, where)
    except InputError as e:
        raise InputError(
            where, e.problem, field=f"{field}.options.{e.field or ''}".rstrip(".")
        ) from None
    return PolicySpec("threshold", "", tuple((k, float(v)) for k, v in opts.items()))


def _build(
    spec: PolicySpec,
    target: TargetConfig,
    profile: ServiceProfile,
    where: str,
    field: str,
    cache: dict[str, PolicyFactory] | None,
) -> BuiltPolicy:
    # Targets served by one checkpoint share one loaded policy: it is stateless (a deterministic
    # MLP), and 100 targets then hold one copy of the weights, loaded and verified once.
    key = f"{profile.name}|{spec}"
    factory = cache.get(key) if cache is not None and spec.kind == "ppo" else None
    if factory is None:
        slo = target.slo or SLOConfig()
        config = SimConfig.with_slo(slo.slo_class())
        try:
            factory = make_policy(spec, profile=profile, config=config)
        except InputError as e:
            if spec.kind != "ppo":
                raise InputError(where, str(e), field=field) from None
            raise InputError(
                where, f"checkpoint refused: {e}", field=f"{field}.checkpoint"
            ) from None
        if cache is not None and spec.kind == "ppo":
            cache[key] = factory
    policy = factory(0)
    if spec.kind != "ppo":
        return BuiltPolicy(policy, factory.limits, factory.window)
    return _checked_checkpoint(policy, factory, spec, profile, where, field)


def _checked_checkpoint(
    policy: Any,
    factory: PolicyFactory,
    spec: PolicySpec,
    profile: ServiceProfile,
    where: str,
    field: str,
) -> BuiltPolicy:
    trained_for = ((getattr(policy, "manifest", {}) or {}).get("profile") or {}).get("name")
    if trained_for and trained_for != profile.name:
        raise InputError(
            where,
            f"checkpoint refused: {spec.arg} was trained for profile {trained_for!r}, the target runs {profile.name!r}",
            field=f"{field}.checkpoint",
        )
    if factory.limits.gpus_per_replica != profile.gpus_per_replica:
        raise InputError(
            where,
            f"checkpoint refused: {spec.arg} was trained with {factory.limits.gpus_per_replica} GPU(s) per replica, "
            f"profile {profile.name!r} has {profile.gpus_per_replica}",
            field=f"{field}.checkpoint",
        )
    obs = policy.obs_spec
    slo = SLOConfig(ttft_s=obs.ttft_slo_s, tpot_s=obs.tpot_slo_s)
    return BuiltPolicy(
        policy,
        factory.limits,
        factory.window,
        slo=slo,
        warm_pool=int(policy.act_spec.max_warm),
        standby_tier=getattr(policy, "standby_tier", None),
        interval_s=_trained_interval_s(policy),
    )


def _trained_interval_s(policy: Any) -> float | None:
    """The env interval in the checkpoint's training config, if it recorded one."""
    manifest = getattr(policy, "manifest", {}) or {}
    env = ((manifest.get("training_config") or {}).get("env")) or {}
    value = env.get("interval_s")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def check_tick(policies: TargetPolicies, tick_s: float, where: str) -> None:
    """A checkpoint reads a window of intervals as long as the one it was trained on; another
    tick changes what every rate and every step of its window means."""
    trained = policies.primary.interval_s
    if trained is not None and not math.isclose(trained, tick_s, rel_tol=1e-6):
        raise InputError(
            where,
            f"tick_s = {tick_s:g}, but the checkpoint was trained on {trained:g} s intervals; "
            f"set tick_s: {trained:g} (or serve a checkpoint trained at {tick_s:g} s)",
            field="tick_s",
        )


def build_target_policies(
    target: TargetConfig, cache: dict[str, PolicyFactory] | None = None
) -> TargetPolicies:
    """The target's policies and the limits it is clamped by; `cache` (one dict for all targets)
    shares a checkpoint loaded for several targets."""
    where = f"target {target.key}"
    try:
        profile = load_profile(target.profile)
    except InputError as e:
        raise InputError(where, str(e), field="profile") from None

    def build(choice: PolicyChoice, field: str) -> BuiltPolicy:
        spec = policy_spec(choice, where, field)
        if spec.option("warm") and target.standby is None:
            # without `standby:` nothing would fill the pool: the one the operator asked for
            # would silently not exist
            raise InputError(
                where,
                f"{spec}: `#warm=N` holds a standby pool; add a `standby:` section to the target "
                "(tier: sleeping | warm_node | preloaded_node, docs/warm-pool.md) or drop the option",
                field=field,
            )
        if spec.option("warm") and field == "fallback":
            raise InputError(
                where, f"{spec}: the fallback does not size the pool; drop `#warm`", field=field
            )
        return _build(spec, target, profile, where, field, cache)

    primary = build(target.policy, "policy")
    fallback = build(target.fallback, "fallback") if target.fallback is not None else None
    if fallback is not None and fallback.warm_pool:
        raise InputError(
            where,
            "a checkpoint cannot be the fallback: use a rule policy (hpa, threshold, ...)",
            field="fallback",
        )
    warnings = _check_warm_pool(primary, target, where)
    asked = policy_spec(target.policy, where, "policy").option("warm")
    if asked and target.limits is not None and target.limits.max_warm_replicas < asked:
        warnings.append(
            f"the policy holds a warm pool of {asked:g}; clamped to limits.max_warm_replicas = "
            f"{target.limits.max_warm_replicas}"
        )
    slo = _target_slo(primary, target, where)
    limits = _target_limits(primary, target, profile, where, warnings)
    window = target.window or max(primary.window, fallback.window if fallback else 1, 1)
    if not math.isfinite(window) or window < 1:
        window = DEFAULT_WINDOW
    return TargetPolicies(primary, fallback, limits, int(window), slo, profile, warnings)


def _check_warm_pool(primary: BuiltPolicy, target: TargetConfig, where: str) -> list[str]:
    if not primary.warm_pool:
        return []
    if target.ignore_warm_pool:
        if target.standby is not None:
            raise InputError(
                where,
                "`ignore_warm_pool: true` and a `standby:` section contradict each other; keep one",
                field="ignore_warm_pool",
            )
        return [
            f"the policy sizes a warm pool of up to {primary.warm_pool}; ignored (every scale-up is a cold start)"
        ]
    if target.standby is None:
        raise InputError(
            where,
            f"checkpoint refused: trained with a warm pool (up to {primary.warm_pool} standby replicas); add a "
            "`standby:` section to the target (tier: sleeping | warm_node | preloaded_node) to actuate it, set "
            "`ignore_warm_pool: true` to serve it without one (every scale-up a cold start), or retrain with "
            "max_warm_replicas: 0",
            field="policy.checkpoint",
        )
    trained, actuated = primary.standby_tier, target.standby.tier
    if trained is not None and trained != actuated:
        # A pool learned for 10-s wakes (sleeping) is too small for 5-min ones (warm nodes), and
        # one learned for slow wakes holds GPUs a fast tier does not need.
        raise InputError(
            where,
            f"checkpoint refused: it learned to size a pool of {trained!r} replicas, the target's "
            f"standby.tier is {actuated!r}; set tier: {trained} or retrain with env.standby_tier: {actuated}",
            field="standby.tier",
        )
    if target.limits is not None and target.limits.max_warm_replicas < primary.warm_pool:
        return [
            f"the policy sizes a warm pool of up to {primary.warm_pool}; clamped to "
            f"limits.max_warm_replicas = {target.limits.max_warm_replicas}"
        ]
    return []


def _target_slo(primary: BuiltPolicy, target: TargetConfig, where: str) -> SLOConfig:
    """The target's SLO, which must be the checkpoint's where its observation is normalised by
    it (TTFT base and TPOT); a TTFT slope per 1k tokens on top applies to the guards only."""
    if (
        primary.slo is not None
        and target.slo is not None
        and (target.slo.ttft_s, target.slo.tpot_s) != (primary.slo.ttft_s, primary.slo.tpot_s)
    ):
        raise InputError(
            where,
            f"checkpoint refused: trained for SLO ttft {primary.slo.ttft_s} s / tpot {primary.slo.tpot_s} s, the target "
            f"declares ttft {target.slo.ttft_s} s / tpot {target.slo.tpot_s} s",
            field="slo",
        )
    return target.slo or primary.slo or SLOConfig()


def _target_limits(
    primary: BuiltPolicy,
    target: TargetConfig,
    profile: ServiceProfile,
    where: str,
    warnings: list[str],
) -> SafetyLimits:
    if target.limits is None:
        pool = primary.limits.max_warm_replicas if target.standby is not None else 0
        return primary.limits.model_copy(
            update={"max_warm_replicas": pool, "gpus_per_replica": profile.gpus_per_replica}
        )
    limits = target.limits
    if "gpus_per_replica" not in limits.model_fields_set:
        limits = limits.model_copy(update={"gpus_per_replica": profile.gpus_per_replica})
    if limits.gpus_per_replica != profile.gpus_per_replica:
        raise InputError(
            where,
            f"gpus_per_replica = {limits.gpus_per_replica}, profile {profile.name!r} has {profile.gpus_per_replica}",
            field="limits.gpus_per_replica",
        )
    if primary.slo is not None and limits.max_replicas > primary.limits.max_replicas:
        warnings.append(
            f"limits.max_replicas {limits.max_replicas} is above the {primary.limits.max_replicas} the checkpoint trained under"
        )
    return limits
