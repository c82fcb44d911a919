"""What one replica sustains, read off the serving model the simulator uses: at its knee
(`replica_capacity_rps`) and within the SLO (`slo_capacity_rps`).

`ServiceProfile.capacity_rps` and `rlscale.serving.model.serve_interval` are two readings of the
same latency model; where they disagree (the serving model ignores a coefficient the profile
has), sizing from the profile would over- or under-provision against the simulator. Policies and
the evaluator size from `replica_capacity_rps` below, which asks the serving model itself: one
ready replica with a full batch completes exactly its knee rate (`serving.model.knee_rps`).

`observation_spec` writes the profile into the contract's `ObservationSpec`, the capacity model
the encoder, the action map and the `target:U` rule size demand with. It lives here, not in
`envs`, because policies build it too (they may not import the simulator).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from rlscale.contract import (
    DEFAULT_SLO_TARGET,
    DEFAULT_TPOT_SLO_S,
    DEFAULT_TTFT_SLO_S,
    SLO_GRID_OUTPUT_LOG2,
    SLO_GRID_PROMPT_LOG2,
    SLO_SHARE_FLOOR,
    ObservationSpec,
)
from rlscale.profiles.model import LatencyModel, ServiceProfile
from rlscale.serving.model import LatencyArrays, knee_rps, serve_interval, steady_running


def replica_capacity_rps(
    profile: ServiceProfile, prompt_tokens: float | None = None, output_tokens: float | None = None
) -> float:
    """Requests/s one ready replica admits at its KV-cache knee for requests of this size
    (defaults: the profile's typical request)."""
    isl = float(profile.typical_prompt_tokens if prompt_tokens is None else prompt_tokens)
    osl = float(profile.typical_output_tokens if output_tokens is None else output_tokens)
    return _capacity(profile.latency, round(max(isl, 1.0), 1), round(max(osl, 1.0), 1))


@lru_cache(maxsize=4096)
def _capacity(latency: LatencyModel, isl: float, osl: float) -> float:
    return float(knee_rps(_latency_arrays(latency), np.array([isl]), np.array([osl]))[0])


def _latency_arrays(latency: LatencyModel) -> LatencyArrays:
    names = LatencyArrays.__dataclass_fields__
    return LatencyArrays(**{k: np.full(1, float(getattr(latency, k))) for k in names})


def slo_capacity_rps(
    profile: ServiceProfile,
    prompt_tokens: float | None = None,
    output_tokens: float | None = None,
    *,
    replicas: int = 1,
    slo_target: float = DEFAULT_SLO_TARGET,
    prompt_cv: float = 1.0,
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
    tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
    arrival_scv: float = 1.0,
    ttft_slo_s_per_1k_tokens: float = 0.0,
) -> float:
    """Requests/s per replica that `replicas` ready replicas serve with `slo_target` of the
    requests within both SLOs (queue empty and the batch at its steady state at the start of the interval): the rate at which a
    fleet is "at capacity" for the service's SLO. It sits below the knee, where the queue grows
    without bound, and approaches it as the fleet grows (more slots pool the bursts): on the 8B
    profile 22.6 vs 23.6 req/s for one replica at Azure conv sizes (1,155 / 211 tokens), 23.3
    for four, and 17.4 vs 21.4 for Azure code sizes (2,048 / 28). 0 where even an idle fleet
    misses `slo_target` (`idle_slo_share`). The TTFT SLO is `ttft_slo_s` plus
    `ttft_slo_s_per_1k_tokens` per 1,000 prompt tokens (`rlscale.slo`)."""
    isl = float(profile.typical_prompt_tokens if prompt_tokens is None else prompt_tokens)
    osl = float(profile.typical_output_tokens if output_tokens is None else output_tokens)
    return _slo_capacity(
        profile.latency,
        round(max(isl, 1.0), 1),
        round(max(osl, 1.0), 1),
        int(max(replicas, 1)),
        float(slo_target),
        round(float(prompt_cv), 3),
        float(ttft_slo_s),
        float(tpot_slo_s),
        float(arrival_scv),
        float(ttft_slo_s_per_1k_tokens),
    )


@lru_cache(maxsize=4096)
def _slo_capacity(
    latency: LatencyModel,
    isl: float,
    osl: float,
    n: int,
    target: float,
    cv: float,
    ttft: float,
    tpot: float,
    scv: float,
    ttft_per_1k: float,
) -> float:
    knee = _capacity(latency, isl, osl)
    dt = 60.0
    # the attainment is monotone in the rate: scan a fine grid, then refine between neighbours
    # at the knee itself the backlog is null-recurrent (over one interval it only strays as far
    # as the arrivals do, but it grows without bound over time), so the scan stops short of it
    lo, hi = 0.0, knee * n * (1.0 - 1e-3)
    for _ in range(3):
        rates = np.linspace(lo, hi, 65)[1:]
        k = len(rates)
        base = _latency_arrays(latency)
        lat = LatencyArrays(
            **{f: np.repeat(getattr(base, f), k) for f in LatencyArrays.__dataclass_fields__}
        )
        arr = rates * dt
        isl_k, osl_k = np.full(k, isl), np.full(k, osl)
        r = serve_interval(
            np.zeros(k),
            steady_running(np.full(k, float(n)), arr, isl_k, osl_k, dt, lat),
            np.full(k, float(n)),
            arr,
            isl_k,
            osl_k,
            dt,
            lat,
            prompt_cv=cv,
            arrival_scv=scv,
            ttft_slo_s=ttft,
            tpot_slo_s=tpot,
            ttft_slo_s_per_1k_tokens=ttft_per_1k,
        )
        ok = (r.slo_ok / arr >= target) & (r.queue <= 1e-9)
        if not ok.any():
            hi = rates[0]
            continue
        i = int(np.nonzero(ok)[0].max())
        lo, hi = rates[i], (rates[i + 1] if i + 1 < k else rates[i])
        if hi <= lo:
            break
    return float(lo / n)


# An idle fleet: one request per ~3 minutes per replica, so no request waits for another.
_IDLE_RPS = 1.0 / 180.0


def idle_slo_share(
    profile: ServiceProfile,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    replicas: int = 1,
    prompt_cv: float = 1.0,
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
    tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
    ttft_slo_s_per_1k_tokens: float = 0.0,
    arrival_scv: float = 1.0,
) -> np.ndarray:
    """(N,) share of requests within the SLO on `replicas` idle replicas (empty queue, a near
    empty batch), per request mix (prompt_tokens[i], output_tokens[i]): the most any policy can
    attain for that mix. Below `slo_target` no fleet holds the SLO, however large: the prefill
    of the long prompts alone takes longer than the TTFT target (e.g. a flat 2 s for a 35k-token
    prompt on the 70B profile)."""
    isl = np.maximum(np.asarray(prompt_tokens, dtype=np.float64), 1.0)
    osl = np.maximum(np.asarray(output_tokens, dtype=np.float64), 1.0)
    k = len(isl)
    dt = 60.0
    base = _latency_arrays(profile.latency)
    lat = LatencyArrays(
        **{f: np.repeat(getattr(base, f), k) for f in LatencyArrays.__dataclass_fields__}
    )
    n = np.full(k, float(max(replicas, 1)))
    arr = n * (_IDLE_RPS * dt)
    r = serve_interval(
        np.zeros(k),
        steady_running(n, arr, isl, osl, dt, lat),
        n,
        arr,
        isl,
        osl,
        dt,
        lat,
        prompt_cv=prompt_cv,
        arrival_scv=arrival_scv,
        ttft_slo_s=ttft_slo_s,
        tpot_slo_s=tpot_slo_s,
        ttft_slo_s_per_1k_tokens=ttft_slo_s_per_1k_tokens,
    )
    return np.minimum(r.slo_ok / arr, 1.0)


def observation_spec(
    profile: ServiceProfile,
    *,
    max_replicas: int,
    window: int,
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
    tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
    ttft_slo_s_per_1k_tokens: float = 0.0,
) -> ObservationSpec:
    """The profile's reference capacity and the seven coefficients of the serving model's knee
    (the units `serving.model._Coeffs` reads them in), so the contract can rescale capacity to the
    observed request mix without importing the profile; `slo_share` from `slo_capacity_rps` at
    these SLOs. The one builder: the env (`EnvConfig.observation_spec`) and the `target:U` rule
    call it, and a checkpoint stores what it returned."""
    lat = profile.latency
    return ObservationSpec(
        replica_capacity_rps=profile.capacity_rps(),
        max_batch=float(lat.max_batch),
        ttft_slo_s=ttft_slo_s,
        tpot_slo_s=tpot_slo_s,
        max_replicas=float(max_replicas),
        window=window,
        ref_prompt_tokens=float(profile.typical_prompt_tokens),
        ref_output_tokens=float(profile.typical_output_tokens),
        iteration_s=lat.tpot_base_ms / 1e3,
        seq_iteration_s=lat.tpot_ms_per_seq / 1e3,
        ctx_token_iteration_s=lat.tpot_ms_per_seq_per_ktok / 1e6,
        prompt_token_s=lat.tpot_ms_per_prefill_token / 1e3,
        request_overhead_s=lat.prefill_base_ms / 1e3,
        kv_cache_tokens=float(lat.kv_cache_tokens),
        slo_share=_slo_share_grid(profile, ttft_slo_s, tpot_slo_s, ttft_slo_s_per_1k_tokens),
    )


def _slo_share_grid(
    profile: ServiceProfile, ttft_slo_s: float, tpot_slo_s: float, ttft_slo_s_per_1k_tokens: float
) -> tuple[float, ...]:
    """`ObservationSpec.slo_share`: the serving model's SLO capacity of a 4-replica fleet over its
    knee, on the contract's grid of request sizes."""
    out = []
    for kp in SLO_GRID_PROMPT_LOG2:
        for ko in SLO_GRID_OUTPUT_LOG2:
            isl = profile.typical_prompt_tokens * 2.0**kp
            osl = profile.typical_output_tokens * 2.0**ko
            slo = slo_capacity_rps(
                profile,
                isl,
                osl,
                replicas=4,
                ttft_slo_s=ttft_slo_s,
                tpot_slo_s=tpot_slo_s,
                ttft_slo_s_per_1k_tokens=ttft_slo_s_per_1k_tokens,
            )
            share = slo / replica_capacity_rps(profile, isl, osl)
            out.append(round(max(SLO_SHARE_FLOOR, min(1.0, share)), 4))
    return tuple(out)
