"""ServiceProfile: validation where it enters, the latency model's shape, cold-start sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from rlscale.errors import InputError
from rlscale.profiles import load_profile, shipped_profiles
from rlscale.profiles.model import PROFILE_DIR, ServiceProfile

SHIPPED = ("llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100")


def _shipped_dict(name: str = "llama-3.1-8b-h100") -> dict:
    return yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "bad-profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_both_shipped_profiles_are_listed_and_load():
    assert set(SHIPPED) <= set(shipped_profiles())
    for name in SHIPPED:
        assert load_profile(name).name == name


def test_unknown_profile_name_lists_the_shipped_ones():
    with pytest.raises(InputError) as e:
        load_profile("nope")
    assert "nope" in str(e.value)
    assert all(name in str(e.value) for name in SHIPPED)


def test_missing_field_names_the_file_and_the_field(tmp_path):
    data = _shipped_dict()
    del data["latency"]["kv_cache_tokens"]
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as e:
        load_profile(path)
    assert e.value.field == "latency.kv_cache_tokens"
    assert str(path) in str(e.value) and "missing" in str(e.value)


def test_negative_coefficient_names_the_file_the_field_and_the_value(tmp_path):
    data = _shipped_dict()
    data["latency"]["tpot_ms_per_seq_per_ktok"] = -0.5
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as e:
        load_profile(path)
    assert e.value.field == "latency.tpot_ms_per_seq_per_ktok"
    assert str(path) in str(e.value) and "-0.5" in str(e.value)


def test_stage_with_low_above_mode_names_the_stage_field(tmp_path):
    data = _shipped_dict()
    stage = data["cold_start"][2]
    stage["low_s"], stage["mode_s"] = 30.0, 20.0
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as e:
        load_profile(path)
    assert e.value.field == "cold_start.2.mode_s"
    assert str(path) in str(e.value) and stage["name"] in str(e.value)


def test_stage_with_high_below_mode_is_refused(tmp_path):
    data = _shipped_dict()
    data["warm_wake"]["high_s"] = 1.0
    with pytest.raises(InputError) as e:
        load_profile(_write(tmp_path, data))
    assert e.value.field == "warm_wake.high_s"


def test_profile_without_the_prefill_term_is_the_plain_model():
    data = _shipped_dict()
    del data["latency"]["tpot_ms_per_prefill_token"]
    p = ServiceProfile.model_validate(data)
    lat = p.latency
    assert float(p.tpot_ms(10, 2000, 5.0)) == pytest.approx(
        lat.tpot_base_ms + (lat.tpot_ms_per_seq + lat.tpot_ms_per_seq_per_ktok * 2.0) * 10
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_latency_broadcasts_over_batches_of_clusters(name):
    p = load_profile(name)
    c = np.array([1.0, 16.0, 64.0, 200.0])
    ctx = np.array([500.0, 1200.0, 3000.0, 9000.0])
    tpot, ttft = p.tpot_ms(c, ctx, ctx / 200.0), p.ttft_ms(c, ctx)
    assert tpot.shape == ttft.shape == (4,)
    assert np.all(np.diff(p.tpot_ms(c, 1200.0)) > 0) and np.all(np.diff(p.ttft_ms(c, 1200.0)) > 0)
    # without the ratio, TPOT is that of the profile's typical request shape
    r = p.typical_prompt_tokens / p.typical_output_tokens
    assert p.tpot_ms(c, ctx) == pytest.approx(p.tpot_ms(c, ctx, r))


def test_capacity_is_positive_and_ordered_by_model_size():
    p8, p70 = load_profile("llama-3.1-8b-h100"), load_profile("llama-3.1-70b-fp8-4xh100")
    cap8, cap70 = p8.capacity_rps(), p70.capacity_rps()
    # 70B has ~8.8x the weights per token to push on 4x the GPUs (FP8 GEMMs at most ~2x faster):
    # a 70B replica serves fewer requests than an 8B one, and per GPU it serves 3-20x fewer.
    assert 0 < cap70 < cap8
    assert 3 < cap8 / (cap70 / 4) < 20
    # and a request costs more on the 70B
    assert p70.replica_usd_per_hour / cap70 > p8.replica_usd_per_hour / cap8
    # longer prompts mean fewer requests per second
    assert p8.capacity_rps(4096, 211) < cap8


@pytest.mark.parametrize("name", SHIPPED)
def test_cold_start_samples_lie_in_the_stage_bounds_and_average_to_the_mean(name):
    p = load_profile(name)
    samples = p.sample_cold_start_s(np.random.default_rng(7), 200_000)
    always = sum(s.low_s for s in p.cold_start if s.probability == 1.0)
    at_most = sum(s.high_s for s in p.cold_start)
    assert samples.min() >= always and samples.max() <= at_most
    assert samples.mean() == pytest.approx(p.mean_cold_start_s, rel=0.01)
    # the occasional stages do happen: some samples exceed what the always-present stages can reach
    assert samples.max() > sum(s.high_s for s in p.cold_start if s.probability == 1.0)
    wake = p.sample_wake_s(np.random.default_rng(7), 10_000)
    assert wake.min() >= p.warm_wake.low_s and wake.max() <= p.warm_wake.high_s


def test_cold_start_sampling_is_deterministic_for_a_seed():
    p = load_profile("llama-3.1-8b-h100")
    a = p.sample_cold_start_s(np.random.default_rng(3), (4, 5))
    b = p.sample_cold_start_s(np.random.default_rng(3), (4, 5))
    assert a.shape == (4, 5) and np.array_equal(a, b)
