"""The observation contract shared by the simulator and the controller."""

from __future__ import annotations

import math

import numpy as np

from rlscale.contract import (
    FIELDS,
    ActionSpec,
    IntervalMetrics,
    ObservationSpec,
    encode,
    feature_names,
    observation_size,
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
    i = names.index("t-0:load_per_ready_replica")
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
