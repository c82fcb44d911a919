"""The synthetic generator: diurnal shape, weekly factor, bursts, sizes, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.traces import default_workload, synthetic_workload
from rlscale.traces.synthetic import diurnal_shape


def test_peak_over_trough_is_one_over_the_trough_ratio() -> None:
    w = synthetic_workload(
        days=1.0, interval_s=10.0, trough_ratio=0.15, bursts_per_day=0, noise_cv=0, weekly=False
    )
    ten = w.rebin(600.0).rate_rps
    assert ten.max() / ten.min() == pytest.approx(1 / 0.15, rel=0.1)
    assert 3.0 <= np.argmin(ten) / 6 <= 5.0  # trough around 04:00
    assert 12.0 <= np.argmax(ten) / 6 <= 16.0  # peak in the afternoon


def test_the_default_day_swings_five_to_ten_times_hour_by_hour() -> None:
    w = default_workload(seed=0)
    hourly = w.rebin(3600.0).rate_rps
    assert 5.0 <= hourly.max() / hourly.min() <= 10.0


def test_the_default_peak_needs_ten_to_fifteen_replicas_of_an_8b_h100() -> None:
    w = default_workload(seed=0)
    peak_minute = np.quantile(w.rebin(60.0).rate_rps, 0.99)
    replicas_at_15_rps = peak_minute / 15.0
    assert 10.0 <= replicas_at_15_rps <= 15.0


def test_default_workload_is_one_day_of_one_second_bins_from_midnight() -> None:
    w = default_workload()
    assert w.n_bins == 86_400 and w.interval_s == 1.0 and w.start_s == 0.0
    assert np.all(w.arrivals == np.round(w.arrivals))


def test_sizes_match_the_azure_conv_means() -> None:
    w = synthetic_workload(days=1.0, seed=1)
    assert np.average(w.prompt_tokens, weights=w.arrivals) == pytest.approx(1155, rel=0.01)
    assert np.average(w.output_tokens, weights=w.arrivals) == pytest.approx(211, rel=0.02)
    # lognormal with the conv mean and median: CV sqrt(exp(2 ln(mean/median)) - 1)
    assert w.prompt_tokens_cv == pytest.approx(0.531, abs=0.005)
    assert w.output_tokens_cv == pytest.approx(1.294, abs=0.005)
    # a bin's mean varies as CV / sqrt(n): busy bins are tighter than quiet ones
    busy, quiet = w.arrivals >= 100, (w.arrivals > 0) & (w.arrivals <= 20)
    assert w.prompt_tokens[busy].std() < w.prompt_tokens[quiet].std()


def test_weekends_are_quieter_than_weekdays() -> None:
    w = synthetic_workload(days=7.0, interval_s=60.0, bursts_per_day=0, seed=2)
    daily = w.rebin(86_400.0).rate_rps
    assert daily[5] < 0.8 * daily[:5].mean()  # Saturday
    assert daily[6] < 0.9 * daily[:5].mean()  # Sunday (Monday's ramp starts Sunday noon)


def test_bursts_raise_the_rate_for_minutes() -> None:
    calm = synthetic_workload(days=1.0, interval_s=10.0, bursts_per_day=0, seed=3)
    bursty = synthetic_workload(days=1.0, interval_s=10.0, bursts_per_day=48, seed=3)
    assert len(bursty.meta["bursts"]) > 30
    assert all(120 <= b["duration_s"] <= 600 for b in bursty.meta["bursts"])
    assert bursty.total_requests > 1.05 * calm.total_requests


def test_the_generator_is_deterministic_given_the_seed() -> None:
    a, b, c = (synthetic_workload(days=0.25, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.arrivals, b.arrivals)
    np.testing.assert_array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.arrivals, c.arrivals)


def test_the_diurnal_shape_is_continuous_across_midnight() -> None:
    t = np.array([86_400.0 - 1e-6, 86_400.0, 4 * 3600.0, 14 * 3600.0])
    s = diurnal_shape(t, 0.2)
    assert s[0] == pytest.approx(s[1])
    assert s[2] == pytest.approx(0.2) and s[3] == pytest.approx(1.0)
