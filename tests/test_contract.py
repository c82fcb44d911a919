"""The observation contract shared by the simulator and the controller."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from rlscale.contract import (
    FIELDS,
    ActionSpec,
    IntervalMetrics,
    ObservationSpec,
    capacity_at_mix,
    demand_replicas,
    encode,
    encode_raw,
    feature_names,
    history_features,
    history_rows,
    observation_size,
    request_mix,
    rows_needed,
    window_array,
)

SPEC = ObservationSpec(
    replica_capacity_rps=20.0,
    max_batch=256,
    ttft_slo_s=2.0,
    tpot_slo_s=0.1,
    max_replicas=20,
    window=3,
)


def metrics(**kw) -> IntervalMetrics:
    base = {f: 0.0 for f in FIELDS}
    base.update(interval_s=15.0, replicas_ready=4, replicas_desired=4)
    base.update(kw)
    return IntervalMetrics(**base)


def test_encoding_is_per_replica_so_fleet_size_does_not_matter():
    small = encode([metrics(arrival_rps=40, replicas_ready=2, requests_waiting=10)], SPEC)
    large = encode([metrics(arrival_rps=400, replicas_ready=20, requests_waiting=100)], SPEC)
    names = feature_names(SPEC)
    i = names.index("t-0:demand_per_ready_replica")
    assert small[i] == large[i] == 1.0
    j = names.index("t-0:fleet_fraction")
    assert small[j] != large[j]


def test_nan_fields_encode_as_zero_never_nan():
    m = metrics(arrival_rps=math.nan, ttft_p95_s=math.nan)
    assert m.has_nan() == ["arrival_rps", "ttft_p95_s"]
    obs = encode([m], SPEC)
    assert obs.shape == (observation_size(SPEC),) and np.isfinite(obs).all()


def test_short_history_is_padded_with_its_oldest_entry():
    a, b = metrics(arrival_rps=10), metrics(arrival_rps=30)
    assert np.array_equal(encode([a, b], SPEC), encode([a, a, b], SPEC))


def test_action_maps_target_utilisation_to_replicas():
    spec = ActionSpec(u_min=0.3, u_max=0.95, drain_s=60)
    last = metrics(arrival_rps=90.0, requests_waiting=300.0).to_array()
    # demand 90 + 300/60 = 95 rps; u = 0.625 at a = 0 -> 95 / (20 x 0.625) = 7.6 -> 8
    reps, warm = spec.decode(np.array([0.0, -1.0]), last, SPEC)
    assert reps == 8 and warm == 0


# --- version 2: token-aware demand ----------------------------------------------------------

PROFILE_NAMES = ("llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100")


def _spec_for(name: str):
    from rlscale.envs.core import EnvConfig
    from rlscale.profiles.model import load_profile

    prof = load_profile(name)
    return prof, EnvConfig(window=4).observation_spec(prof)


def test_capacity_model_is_the_serving_models_knee():
    """The contract's copy of the knee formula must stay the serving model's: if either drifts,
    the action map sizes fleets for a different simulator than the one it is scored in."""
    from dataclasses import replace

    from rlscale.serving.capacity import replica_capacity_rps

    for name in PROFILE_NAMES:
        prof, spec = _spec_for(name)
        spec = replace(spec, slo_share=())
        ref = replica_capacity_rps(prof)
        for isl, osl in [(1155, 211), (12000, 340), (4620, 211), (200, 2000), (30000, 64)]:
            want = spec.replica_capacity_rps * replica_capacity_rps(prof, isl, osl) / ref
            got = float(capacity_at_mix(spec, np.float64(isl), np.float64(osl)))
            assert math.isclose(got, want, rel_tol=1e-6), (name, isl, osl, got, want)


def test_capacity_is_rescaled_to_what_holds_the_slo_at_the_mix():
    """On the SLO grid the capacity ratio is the serving model's SLO-capacity ratio (a 4-replica
    fleet); long prompts lose the TTFT SLO before the knee, so they count for more."""
    from rlscale.serving.capacity import slo_capacity_rps

    prof, spec = _spec_for(PROFILE_NAMES[0])
    i0, o0 = prof.typical_prompt_tokens, prof.typical_output_tokens
    ref_slo = slo_capacity_rps(prof, i0, o0, replicas=4)
    ref_cap = float(capacity_at_mix(spec, np.float64(i0), np.float64(o0)))
    assert math.isclose(ref_cap, spec.replica_capacity_rps, rel_tol=1e-9)
    for kp, ko in [(1.0, 0.0), (2.0, -1.0), (3.0, 0.0)]:
        isl, osl = i0 * 2**kp, o0 * 2**ko
        want = slo_capacity_rps(prof, isl, osl, replicas=4) / ref_slo
        got = float(capacity_at_mix(spec, np.float64(isl), np.float64(osl))) / ref_cap
        assert math.isclose(got, want, rel_tol=2e-3), (kp, ko, got, want)
    # between grid points it interpolates; beyond the grid (or the SLO's reach) it is bounded
    far = float(capacity_at_mix(spec, np.float64(i0 * 64), np.float64(o0)))
    assert far > 0


def _steady_window(spec, rps: float, isl: float, osl: float, served_rps: float, **kw):
    """A window where `rps` arrive, `served_rps` are served (the rest join the queue)."""
    rows = []
    for t in range(spec.window):
        rows.append(
            metrics(
                time_s=15.0 * t,
                arrival_rps=rps,
                prompt_tokens_per_s=served_rps * isl,
                output_tokens_per_s=served_rps * osl,
                requests_waiting=(rps - served_rps) * 15.0 * t,
                requests_running=50.0,
                **kw,
            ).to_array()
        )
    return np.stack(rows)


def test_request_mix_reads_true_sizes_under_overload():
    """Token counters stop at what the fleet serves; the mix must not shrink with them."""
    _, spec = _spec_for(PROFILE_NAMES[0])
    for served in (10.0, 3.0):  # at capacity, and 3x overloaded
        isl, osl = request_mix(_steady_window(spec, 10.0, 12000.0, 340.0, served), spec)
        assert math.isclose(float(isl), 12000.0, rel_tol=1e-9)
        assert math.isclose(float(osl), 340.0, rel_tol=1e-9)


def test_demand_is_in_replicas_at_the_observed_mix():
    """3.4 req/s of 12k-token prompts need ~10x the replicas of 3.4 req/s of chat requests."""
    _, spec = _spec_for(PROFILE_NAMES[0])
    chat = float(demand_replicas(_steady_window(spec, 34.0, 1155.0, 211.0, 34.0), spec, 60.0))
    long = float(demand_replicas(_steady_window(spec, 34.0, 12000.0, 340.0, 34.0), spec, 60.0))
    assert math.isclose(chat, 34.0 / spec.replica_capacity_rps, rel_tol=1e-6)
    # the knee alone says ~12x; long prompts also lose the 2 s TTFT well before the knee
    from dataclasses import replace

    from rlscale.contract import SLO_SHARE_FLOOR

    knee = replace(spec, slo_share=())
    knee_ratio = float(
        demand_replicas(_steady_window(spec, 34.0, 12000.0, 340.0, 34.0), knee, 60.0)
    ) / float(demand_replicas(_steady_window(spec, 34.0, 1155.0, 211.0, 34.0), knee, 60.0))
    assert 10.0 < knee_ratio < 14.0
    assert 1.05 * knee_ratio < long / chat <= knee_ratio / SLO_SHARE_FLOOR
    act = ActionSpec(u_min=0.8, u_max=0.8)
    w = _steady_window(spec, 34.0, 12000.0, 340.0, 34.0)
    reps, _ = act.decode(np.zeros(2), w[-1], spec, w)
    assert reps == math.ceil(long / 0.8)
    names = feature_names(spec)
    obs = encode([IntervalMetrics.from_array(r) for r in w], spec)
    assert obs[names.index("log2_prompt_tokens_over_ref")] > 3.0
    assert 0.9 < obs[names.index("prefill_token_share")] < 1.0


def test_unobserved_tokens_fall_back_to_the_reference_request():
    _, spec = _spec_for(PROFILE_NAMES[0])
    w = _steady_window(spec, 34.0, 1.0, 1.0, 34.0)
    w[:, FIELDS.index("prompt_tokens_per_s")] = math.nan
    w[:, FIELDS.index("output_tokens_per_s")] = math.nan
    isl, osl = request_mix(w, spec)
    assert (float(isl), float(osl)) == (spec.ref_prompt_tokens, spec.ref_output_tokens)


def test_hold_band_keeps_the_target_on_small_dips_never_on_rises():
    act = ActionSpec(u_min=1.0, u_max=1.0, hold_band=0.2)
    for desired, demand_rps_, want in [(10, 180.0, 10), (10, 150.0, 8), (10, 230.0, 12)]:
        last = metrics(arrival_rps=demand_rps_, replicas_desired=desired).to_array()
        reps, _ = act.decode(np.zeros(2), last, SPEC)
        assert reps == want, (desired, demand_rps_, reps)


HIST = replace(SPEC, history_intervals=(4, 8))


def test_history_features_are_each_lags_rate_against_the_last_minute():
    # 16 intervals: 20 rps, then 40 rps for the last 4; lag 4 reads the 20-rps minute before
    rates = np.array([10.0] * 4 + [20.0] * 8 + [40.0] * 4)
    got = history_features(rates, HIST)
    assert got == pytest.approx(
        [math.tanh(math.log(40.001 / 20.001)), math.tanh(math.log(40.001 / 20.001))]
    )
    # a fall reads negative, and the features carry no scale: x100 traffic, the same values
    assert history_features(rates[::-1], HIST)[0] < 0
    assert history_features(rates * 100, HIST) == pytest.approx(got, abs=1e-4)
    # batched, as the env calls it
    both = history_features(np.stack([rates, rates[::-1]]), HIST)
    assert both.shape == (2, 2) and both[0] == pytest.approx(got)


def test_history_not_yet_observed_reads_zero_never_a_trend():
    short = np.array([20.0] * 10)  # lag 8 needs 12 intervals
    assert history_features(short, HIST)[1] == 0.0
    gap = np.array([np.nan] * 4 + [20.0] * 8)  # the lag-8 minute was never observed
    assert history_features(gap, HIST).tolist() == [0.0, 0.0]
    assert history_rows(HIST) == 12 and rows_needed(HIST) == 12 and rows_needed(SPEC) == 3


def test_encode_reads_history_from_the_unpadded_intervals_and_appends_it():
    rows = [metrics(arrival_rps=20.0)] * 8 + [metrics(arrival_rps=40.0)] * 4
    obs = encode(rows, HIST)
    assert len(obs) == observation_size(HIST) == observation_size(SPEC) + 2
    assert feature_names(HIST)[-2:] == [
        "hist-4:tanh_log_arrivals_now_over_then",
        "hist-8:tanh_log_arrivals_now_over_then",
    ]
    assert obs[-2] == pytest.approx(math.tanh(math.log(40.001 / 20.001)), rel=1e-5)
    # the window part is what a spec without history encodes
    assert np.array_equal(obs[:-2], encode(rows, SPEC))
    # one interval (a controller that just started): no history, the features are 0
    assert encode(rows[-1:], HIST)[-2:].tolist() == [0.0, 0.0]
    # no arrival history given to the array encoder: 0, not an error
    assert encode_raw(window_array(rows, HIST), HIST)[-2:].tolist() == [0.0, 0.0]
