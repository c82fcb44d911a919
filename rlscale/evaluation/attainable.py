"""Can the SLO be met at all? The share of a workload's requests within the SLO on idle replicas,
and the one line `rlscale evaluate` stops with when it is below the SLO target.

A 2 s TTFT SLO on a long-context service (prompts averaging 12k tokens, some 50k) is missed by
~9 % of the requests on the 70B profile even when every replica is idle: prefill alone takes
longer. No policy, the oracle included, can then reach 99 %, and the fleet cannot be sized for
the SLO (its SLO capacity is 0). A platform engineer wants to hear that the SLO, not the
autoscaler, is the problem, in one line, with what would fix it, so the evaluation stops with
exit status 2 (an input error) and names the share affected, a TTFT slope per 1k prompt tokens
that the idle fleet meets, and the `--slo-target` that the SLO as given does reach. Lowering
`--slo-target` to that share (or below) is the way to evaluate against the SLO as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlscale.profiles.model import ServiceProfile
from rlscale.serving.capacity import idle_slo_share, slo_capacity_rps
from rlscale.serving.model import SimConfig
from rlscale.traces.workload import Workload

# slopes (s per 1k prompt tokens) tried, smallest first, for the suggestion: the first whose idle
# share reaches halfway from the target to 100 % (99.5 % for 99 %), headroom for queueing
SUGGESTED_SLOPES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Attainability:
    """What an idle fleet attains on a workload's requests, request-weighted over its bins."""

    share: float  # requests within the SLO on idle replicas
    affected: float  # 1 - share
    max_prompt_tokens: float  # the largest bin's mean prompt (for the message)
    suggested_slope: float | None  # s per 1k tokens at the same base that reaches the target
    # the highest --slo-target (to 0.001) at which the fleet can be sized for the SLO as given
    suggested_target: float | None = None

    @property
    def any_affected(self) -> bool:
        return self.affected > 1e-4


def idle_share(
    w: Workload, profile: ServiceProfile, config: SimConfig, replicas: int, slope: float
) -> float:
    """Request-weighted share within the SLO (TTFT slope `slope`) on `replicas` idle replicas."""
    wts = np.asarray(w.arrivals, dtype=np.float64)
    keep = wts > 0
    if not keep.any():
        return 1.0
    # a trace of thousands of bins: one row per distinct size mix (to 1 %) is enough
    sizes = np.round(np.log(np.stack([w.prompt_tokens[keep], w.output_tokens[keep]])) * 100.0)
    uniq, inv = np.unique(sizes.T, axis=0, return_inverse=True)
    share = idle_slo_share(
        profile,
        np.exp(uniq[:, 0] / 100.0),
        np.exp(uniq[:, 1] / 100.0),
        replicas=replicas,
        prompt_cv=w.prompt_tokens_cv,
        ttft_slo_s=config.ttft_slo_s,
        tpot_slo_s=config.tpot_slo_s,
        ttft_slo_s_per_1k_tokens=slope,
        arrival_scv=config.arrival_scv,
    )[np.ravel(inv)]
    return float((share * wts[keep]).sum() / wts[keep].sum())


def attainability(
    w: Workload,
    profile: ServiceProfile,
    config: SimConfig,
    slo_target: float,
    replicas: int,
    *,
    sized: bool = True,
) -> Attainability:
    """The idle share; where it is below `slo_target` or the fleet cannot be sized for the SLO
    (`sized` False: SLO capacity 0), the slope and the SLO target to suggest."""
    share = idle_share(w, profile, config, replicas, config.ttft_slo_s_per_1k_tokens)
    slope = None
    if share < slo_target or not sized:
        for s in SUGGESTED_SLOPES:
            if s > config.ttft_slo_s_per_1k_tokens and (
                idle_share(w, profile, config, replicas, s) >= 0.5 * (1.0 + slo_target)
            ):
                slope = s
                break
        target = _reachable_target(w, profile, config, share, replicas)
    else:
        target = None
    return Attainability(share, 1.0 - share, float(np.max(w.prompt_tokens)), slope, target)


def _reachable_target(
    w: Workload, profile: ServiceProfile, config: SimConfig, share: float, replicas: int
) -> float | None:
    """The idle share rounded down, lowered until the fleet can be sized at the mean request
    (the capacity the evaluator sizes with reads the mean mix, where the share may be lower
    than the per-bin average), in steps of 0.5 points; None below 50 %."""
    from rlscale.evaluation.evaluate import mean_sizes

    isl, osl = mean_sizes(w)
    target = math.floor(share * 1000.0) / 1000.0
    while target >= 0.5:
        cap = slo_capacity_rps(
            profile,
            isl,
            osl,
            replicas=replicas,
            slo_target=target,
            prompt_cv=w.prompt_tokens_cv,
            ttft_slo_s=config.ttft_slo_s,
            tpot_slo_s=config.tpot_slo_s,
            arrival_scv=config.arrival_scv,
            ttft_slo_s_per_1k_tokens=config.ttft_slo_s_per_1k_tokens,
        )
        if cap > 0:
            return target
        target = math.floor((target - 0.005) * 200.0) / 200.0
    return None


def unattainable_problem(config: SimConfig, slo_target: float, a: Attainability) -> str:
    """The line's problem (after 'WORKLOAD on PROFILE: '): what share, why, what to change."""
    fix = []
    if a.suggested_slope is not None:
        fix.append(
            f"a TTFT target that grows with the prompt, e.g. --ttft-slo-s "
            f"'{config.ttft_slo_s:g}s+{a.suggested_slope:g}s/1k'"
        )
    if a.suggested_target is not None:
        fix.append(f"--slo-target {a.suggested_target:.3f} to score against the SLO as it is")
    return (
        f"{100 * a.affected:.1f} % of requests miss "
        f"{config.slo.describe()} even on idle replicas (mean prompts up to "
        f"{a.max_prompt_tokens:,.0f} tokens), so no policy can reach the {100 * slo_target:g} % "
        f"SLO target; try {' or '.join(fix) if fix else 'a looser SLO'}"
    )
