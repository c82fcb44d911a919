"""Policies by name, as the evaluator and the command line spell them.

| spec                    | policy                                                        | limits (clamps)                 |
|-------------------------|---------------------------------------------------------------|---------------------------------|
| `hpa`                   | Kubernetes HPA, `manifests/hpa-default.yaml`                  | the manifest's min/max/behavior |
| `hpa:PATH`              | Kubernetes HPA from any autoscaling/v2 manifest               | that manifest's                 |
| `threshold`             | threshold rule, `ThresholdConfig()` defaults                  | its min/max (2 / 20)            |
| `threshold:PATH`        | threshold rule from a YAML of `ThresholdConfig` fields        | its min/max                     |
| `tuned`                 | the tuned HPA for the profile (`manifests/tuned-<profile>.yaml`) | the manifest's               |
| `predictive`            | forecast one cold start ahead                                 | the default + 120 s down-window |
| `static`                | fixed count serving the workload's peak minute within the SLO | the default limits              |
| `static:N`              | fixed count N                                                 | the default limits              |
| `oracle`                | clairvoyant DP plan (sees the workload)                       | the default limits, no rate limits |
| `ppo:PATH`              | trained checkpoint (`rlscale.policies.checkpoint.load_policy`)  | the limits it was trained under |

Each entry carries its own `SafetyLimits`, and the evaluator clamps every policy with its own:
a policy is evaluated as it would be deployed (an HPA with its behaviour, a rule with its bounds).
The default limits are the evaluator's (min 2, max 20 unless told otherwise) and have no
stabilisation or rate limit: the policies that use them pace themselves.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.contract import DEFAULT_SLO_TARGET
from rlscale.errors import InputError
from rlscale.policies.base import Policy
from rlscale.profiles.model import ServiceProfile
from rlscale.safety import SafetyLimits, ScalingRules
from rlscale.serving.model import SimConfig
from rlscale.traces.workload import Workload

POLICY_NAMES: tuple[str, ...] = ("hpa", "threshold", "tuned", "predictive", "static", "oracle", "ppo")
RULE_POLICIES: tuple[str, ...] = ("hpa", "threshold", "tuned", "predictive", "static")
_USAGE = "hpa, hpa:PATH, threshold, threshold:PATH, tuned, predictive, static, static:N, oracle, ppo:PATH"


@dataclass
class PolicyFactory:
    """`factory(seed) -> Policy`, with the limits to clamp it by and where it came from."""

    spec: str
    name: str
    limits: SafetyLimits
    build: Callable[[int], Policy]
    info: dict[str, Any] = field(default_factory=dict)

    def __call__(self, seed: int) -> Policy:
        return self.build(seed)


def default_limits(min_replicas: int = 2, max_replicas: int = 20, gpus_per_replica: int = 1) -> SafetyLimits:
    return SafetyLimits(min_replicas=min_replicas, max_replicas=max_replicas, gpus_per_replica=gpus_per_replica)


def make_policy(
    spec: str,
    *,
    profile: ServiceProfile,
    workload: Workload,
    limits: SafetyLimits | None = None,
    config: SimConfig | None = None,
    slo_target: float = DEFAULT_SLO_TARGET,
    initial_replicas: int | None = None,
) -> PolicyFactory:
    """Resolve a policy spec for one (profile, workload). `workload` is what the evaluation runs:
    only the oracle reads its future, `static` its peak (the sizing a team does from last
    month's peak), the others nothing. `initial_replicas` is the fleet the run starts with (the
    oracle plans from it)."""
    cfg = config or SimConfig()
    lim = limits or default_limits(gpus_per_replica=profile.gpus_per_replica)
    kind, _, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in POLICY_NAMES:
        raise InputError(spec, f"unknown policy {kind!r}; valid: {_USAGE}", field="policy")

    if kind == "hpa":
        from rlscale.policies.hpa import DEFAULT_MANIFEST, HPAPolicy, load_hpa_manifest

        path = Path(arg) if arg else DEFAULT_MANIFEST
        hpa_cfg = load_hpa_manifest(path)
        name = "hpa" if not arg else f"hpa:{path.stem}"
        return PolicyFactory(spec, name, hpa_cfg.limits, lambda seed: HPAPolicy(hpa_cfg, name=name), {"manifest": str(path)})

    if kind == "threshold":
        from rlscale.policies.threshold import ThresholdConfig, ThresholdPolicy

        tcfg = ThresholdConfig.load(arg) if arg else ThresholdConfig()
        name = "threshold" if not arg else f"threshold:{Path(arg).stem}"
        return PolicyFactory(spec, name, ThresholdPolicy(tcfg).limits, lambda seed: ThresholdPolicy(tcfg, name=name), {"config": tcfg.model_dump()})

    if kind == "tuned":
        from rlscale.policies.hpa import HPAPolicy, load_hpa_manifest
        from rlscale.policies.tuned import tuned_manifest_path

        path = tuned_manifest_path(profile)
        if not path.exists():
            raise InputError(str(path), "no tuned manifest shipped; run `python -m rlscale.training.tune` first")
        tuned_cfg = load_hpa_manifest(path)
        return PolicyFactory(
            spec, "tuned", tuned_cfg.limits, lambda seed: HPAPolicy(tuned_cfg, name="tuned"), {"manifest": str(path)}
        )

    if kind == "predictive":
        from rlscale.policies.predictive import (
            SCALE_DOWN_WINDOW_S,
            PredictiveConfig,
            PredictivePolicy,
        )

        plim = lim.model_copy(update={"scale_down": ScalingRules(stabilization_window_s=SCALE_DOWN_WINDOW_S)})
        pcfg = PredictiveConfig(slo_target=slo_target, ttft_slo_s=cfg.ttft_slo_s, tpot_slo_s=cfg.tpot_slo_s)
        return PolicyFactory(spec, "predictive", plim, lambda seed: PredictivePolicy(profile, pcfg, limits=plim))

    if kind == "static":
        from rlscale.policies.static import StaticPolicy

        if arg:
            try:
                n = int(arg)
            except ValueError:
                raise InputError(spec, f"expected static:N with N a replica count, got {arg!r}", field="policy") from None
        else:
            n = static_replicas_for_peak(workload, profile, cfg, slo_target)
        n = int(np.clip(n, lim.min_replicas, lim.max_replicas))
        name = f"static:{arg}" if arg else "static"
        return PolicyFactory(spec, name, lim, lambda seed: StaticPolicy(n), {"replicas": n})

    if kind == "oracle":
        from rlscale.policies.oracle import OraclePolicy, plan_oracle

        plan = plan_oracle(profile, workload, config=cfg, limits=lim, slo_target=slo_target, initial_replicas=initial_replicas)
        return PolicyFactory(
            spec, "oracle", lim, lambda seed: OraclePolicy(plan),
            {"predicted_slo_attainment": plan.predicted_attainment, "planned_slo_attainment": plan.planned_attainment, "lookahead_bins": plan.lookahead_bins,
             "lagrange_multiplier": plan.lam},
        )

    # ppo
    if not arg:
        raise InputError(spec, "expected ppo:PATH to a checkpoint folder", field="policy")
    if importlib.util.find_spec("rlscale.policies.checkpoint") is None:
        raise InputError(spec, "ppo checkpoints not available yet (rlscale.policies.checkpoint is missing)", field="policy")
    from rlscale.policies.checkpoint import load_policy

    probe = load_policy(arg, name=f"ppo:{Path(arg).name}")
    plim = getattr(probe, "limits", None) or lim
    pname = probe.name
    return PolicyFactory(spec, pname, plim, lambda seed: load_policy(arg, name=pname), {"checkpoint": arg})


def static_replicas_for_peak(
    workload: Workload, profile: ServiceProfile, config: SimConfig | None = None, slo_target: float = DEFAULT_SLO_TARGET
) -> int:
    """Replicas that serve the peak minute within the SLO (e.g. 250 req/s peak / 21 req/s per
    replica within the SLO = 11.9 -> 12)."""
    from rlscale.serving.capacity import slo_capacity_rps

    cfg = config or SimConfig()
    w = workload.rebin(max(60.0, cfg.interval_s))
    peak = float(np.max(w.rate_rps))
    arrived = float(w.arrivals.sum())
    isl = float((w.prompt_tokens * w.arrivals).sum() / arrived) if arrived > 0 else None
    osl = float((w.output_tokens * w.arrivals).sum() / arrived) if arrived > 0 else None
    guess = 1
    for _ in range(3):  # per-replica capacity depends (weakly) on the fleet size
        cap = slo_capacity_rps(
            profile, isl, osl, replicas=guess, slo_target=slo_target, prompt_cv=workload.prompt_tokens_cv,
            ttft_slo_s=cfg.ttft_slo_s, tpot_slo_s=cfg.tpot_slo_s, arrival_scv=cfg.arrival_scv,
        )
        guess = max(1, math.ceil(peak / cap - 1e-9))
    return guess
