"""Policies for the live controller, built from a target's `PolicySpec` at start-up.

Why not `rlscale.policies.registry.make_policy`: it imports `rlscale.envs.cluster` (and needs a
workload, for the oracle and `static`'s peak sizing), and `rlscale.deploy` never imports the
simulator. The rule policies that do not need it are built here from their own modules, with
the registry's names:

| rule | policy | options |
|---|---|---|
| `hpa` | Kubernetes HPA (`rlscale.policies.hpa`) | `manifest: PATH` (default: the shipped `hpa-default.yaml`) |
| `threshold` | threshold rule | `ThresholdConfig` fields, or `config: PATH` |
| `tuned` | the tuned HPA for the target's profile | none |
| `static` | fixed count | `replicas: N` |

`predictive` is not offered live: its capacity model comes from the simulator's serving model.

A checkpoint is loaded with `rlscale.policies.checkpoint.load_policy`, which refuses a tampered
folder (hashes), a missing normalisation file and a contract/feature mismatch; here it is also
refused when it was trained for another profile, SLO or GPU count than the target declares,
or with a warm pool (simulator-only) unless the target says `ignore_warm_pool: true`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlscale.deploy.config import PolicySpec, SLOConfig, TargetConfig
from rlscale.errors import InputError
from rlscale.policies.base import Policy
from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.safety import SafetyLimits

LIVE_RULES: tuple[str, ...] = ("hpa", "threshold", "tuned", "static")
DEFAULT_WINDOW = 8


@dataclass
class BuiltPolicy:
    policy: Policy
    limits: SafetyLimits  # the limits it was designed or trained under
    window: int  # intervals of history it reads
    slo: SLOConfig | None = None  # the SLO a checkpoint was trained for
    warm_pool: int = 0  # warm replicas it sizes (a checkpoint's ActionSpec.max_warm)


@dataclass
class TargetPolicies:
    primary: BuiltPolicy
    fallback: BuiltPolicy | None
    limits: SafetyLimits  # what the target is clamped by
    window: int
    slo: SLOConfig
    profile: ServiceProfile
    warnings: list[str]


def _where(target: TargetConfig) -> str:
    return f"target {target.key}"


def build_rule(spec: PolicySpec, profile: ServiceProfile, where: str, field: str) -> BuiltPolicy:
    rule = (spec.rule or "").strip().lower()
    opts: dict[str, Any] = dict(spec.options)

    def unknown_options(allowed: set[str]) -> None:
        extra = set(opts) - allowed
        if extra:
            raise InputError(where, f"unknown option(s) {sorted(extra)} for rule {rule!r}; allowed: {sorted(allowed)}", field=f"{field}.options")

    if rule == "hpa":
        from rlscale.policies.hpa import DEFAULT_MANIFEST, HPAPolicy, load_hpa_manifest

        unknown_options({"manifest"})
        path = Path(opts["manifest"]) if "manifest" in opts else DEFAULT_MANIFEST
        cfg = load_hpa_manifest(path)
        pol = HPAPolicy(cfg, name="hpa" if "manifest" not in opts else f"hpa:{path.stem}")
        return BuiltPolicy(pol, cfg.limits, 1)
    if rule == "threshold":
        from pydantic import ValidationError

        from rlscale.policies.threshold import ThresholdConfig, ThresholdPolicy

        if "config" in opts:
            unknown_options({"config"})
            tcfg = ThresholdConfig.load(opts["config"])
        else:
            try:
                tcfg = ThresholdConfig.model_validate(opts)
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                raise InputError(where, str(err["msg"]).removeprefix("Value error, "), field=f"{field}.options.{loc}".rstrip(".")) from None
        tp = ThresholdPolicy(tcfg)
        return BuiltPolicy(tp, tp.limits, 1)
    if rule == "tuned":
        from rlscale.policies.tuned import load_tuned_policy

        unknown_options(set())
        hp = load_tuned_policy(profile)
        return BuiltPolicy(hp, hp.limits, 1)
    if rule == "static":
        from rlscale.policies.static import StaticPolicy

        unknown_options({"replicas"})
        n = opts.get("replicas")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InputError(where, f"expected options.replicas: N (a count >= 0), got {n!r}", field=f"{field}.options.replicas")
        return BuiltPolicy(StaticPolicy(n), SafetyLimits(min_replicas=min(n, 1), max_replicas=max(n, 1)), 1)
    hint = " (its capacity model needs the simulator, which the live controller does not import)" if rule == "predictive" else ""
    raise InputError(where, f"unknown rule {spec.rule!r}{hint}; the live controller offers: {', '.join(LIVE_RULES)}", field=f"{field}.rule")


def build_checkpoint(
    spec: PolicySpec, target: TargetConfig, profile: ServiceProfile, where: str, field: str,
    cache: dict[tuple[str, float | None], Any] | None = None,
) -> BuiltPolicy:
    from rlscale.policies.checkpoint import load_policy

    path = Path(spec.checkpoint or "")
    # Targets served by one checkpoint share one loaded policy: it is stateless (a deterministic
    # MLP), and 100 targets then hold one copy of the weights, loaded and verified once.
    key = (str(path.resolve()), spec.slo_weight)
    pol = cache.get(key) if cache is not None else None
    if pol is None:
        try:
            pol = load_policy(path, slo_weight=spec.slo_weight, name=f"ppo:{path.name}")
        except InputError as e:
            raise InputError(where, f"checkpoint refused: {e}", field=f"{field}.checkpoint") from None
        if cache is not None:
            cache[key] = pol
    manifest = getattr(pol, "manifest", {}) or {}
    trained_for = (manifest.get("profile") or {}).get("name")
    if trained_for and trained_for != profile.name:
        raise InputError(
            where,
            f"checkpoint refused: {path} was trained for profile {trained_for!r}, the target runs {profile.name!r}",
            field=f"{field}.checkpoint",
        )
    limits: SafetyLimits = pol.limits
    if limits.gpus_per_replica != profile.gpus_per_replica:
        raise InputError(
            where,
            f"checkpoint refused: {path} was trained with {limits.gpus_per_replica} GPU(s) per replica, "
            f"profile {profile.name!r} has {profile.gpus_per_replica}",
            field=f"{field}.checkpoint",
        )
    obs = pol.obs_spec
    slo = SLOConfig(ttft_s=obs.ttft_slo_s, tpot_s=obs.tpot_slo_s)
    warm = int(pol.act_spec.max_warm)
    return BuiltPolicy(pol, limits, int(obs.window), slo=slo, warm_pool=warm)


def build_target_policies(target: TargetConfig, cache: dict[tuple[str, float | None], Any] | None = None) -> TargetPolicies:
    """The target's policies and the limits it is clamped by; `cache` (one dict for all targets)
    shares a checkpoint loaded for several targets."""
    where = _where(target)
    try:
        profile = load_profile(target.profile)
    except InputError as e:
        raise InputError(where, str(e), field="profile") from None
    warnings: list[str] = []

    def build(spec: PolicySpec, field: str) -> BuiltPolicy:
        if spec.checkpoint is not None:
            return build_checkpoint(spec, target, profile, where, field, cache)
        return build_rule(spec, profile, where, field)

    primary = build(target.policy, "policy")
    fallback = build(target.fallback, "fallback") if target.fallback is not None else None
    if fallback is not None and fallback.warm_pool:
        raise InputError(where, "a checkpoint cannot be the fallback: use a rule policy (hpa, threshold, ...)", field="fallback")

    if primary.warm_pool and not target.ignore_warm_pool:
        raise InputError(
            where,
            f"checkpoint refused: trained with a warm pool (up to {primary.warm_pool} standby replicas), which the live "
            "controller does not actuate (simulator-only, see README 'Warm pool'); set `ignore_warm_pool: true` on the "
            "target to serve it without one (every scale-up is then a cold start), or retrain with max_warm_replicas: 0",
            field="policy.checkpoint",
        )
    if primary.warm_pool:
        warnings.append(f"the policy sizes a warm pool of up to {primary.warm_pool}; ignored live (every scale-up is a cold start)")

    slo = target.slo or primary.slo or SLOConfig()
    if primary.slo is not None and target.slo is not None and target.slo != primary.slo:
        raise InputError(
            where,
            f"checkpoint refused: trained for SLO ttft {primary.slo.ttft_s} s / tpot {primary.slo.tpot_s} s, the target "
            f"declares ttft {target.slo.ttft_s} s / tpot {target.slo.tpot_s} s",
            field="slo",
        )

    if target.limits is not None:
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
    else:
        limits = primary.limits.model_copy(update={"max_warm_replicas": 0, "gpus_per_replica": profile.gpus_per_replica})
    window = target.window or max(primary.window, fallback.window if fallback else 1, 1)
    if not math.isfinite(window) or window < 1:
        window = DEFAULT_WINDOW
    return TargetPolicies(primary, fallback, limits, int(window), slo, profile, warnings)
