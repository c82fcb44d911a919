"""SLO classes (`rlscale.slo`): one typed model, spelled one way on the command line, checked where
it enters with one line naming the option or field."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.config import validate_model
from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.errors import InputError
from rlscale.serving.model import SimConfig
from rlscale.slo import SLOClass, parse_slo, parse_ttft_spec


def test_the_default_class_is_the_contracts_flat_slo():
    c = SLOClass()
    assert (c.ttft_s, c.ttft_s_per_1k_tokens, c.tpot_s) == (
        DEFAULT_TTFT_SLO_S,
        0.0,
        DEFAULT_TPOT_SLO_S,
    )
    assert c.is_flat and SimConfig().slo == c
    assert c.describe() == "TTFT <= 2 s and TPOT <= 100 ms"
    # flat: the target is the number itself, whatever the prompt
    assert c.ttft_target_s(50_000.0) == DEFAULT_TTFT_SLO_S
    np.testing.assert_array_equal(c.ttft_target_s(np.array([1.0, 9e4])), [2.0, 2.0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", (2.0, 0.0)),
        ("2s", (2.0, 0.0)),
        ("1500ms", (1.5, 0.0)),
        ("2s+0.5s/1k", (2.0, 0.5)),
        ("2 + 500ms / 1k tokens", (2.0, 0.5)),
        ("1+0.25/1000", (1.0, 0.25)),
        (3.0, (3.0, 0.0)),
    ],
)
def test_a_ttft_spec_is_a_base_plus_a_slope_per_1k_prompt_tokens(text, expected):
    assert parse_ttft_spec(text) == pytest.approx(expected)


def test_the_per_length_target_grows_with_the_prompt_and_round_trips_its_spec():
    c = parse_slo("2s+0.5s/1k", 0.05)
    assert c.ttft_target_s(12_000.0) == pytest.approx(8.0)
    assert c.ttft_target_s(0.0) == pytest.approx(2.0)
    assert parse_slo(c.spec(), c.tpot_s) == c
    assert c.describe() == "TTFT <= 2 s + 0.5 s per 1k prompt tokens and TPOT <= 50 ms"
    cfg = SimConfig.with_slo(c, interval_s=30.0)
    assert (cfg.ttft_slo_s, cfg.ttft_slo_s_per_1k_tokens, cfg.tpot_slo_s, cfg.interval_s) == (
        2.0,
        0.5,
        0.05,
        30.0,
    )
    assert cfg.slo == c


@pytest.mark.parametrize("text", ["fast", "2s+", "2s+0.5s", "-1", "0", "2s+-0.5s/1k", "2h", ""])
def test_a_bad_ttft_spec_is_one_line_naming_the_option(text):
    with pytest.raises(InputError) as e:
        parse_ttft_spec(text)
    msg = str(e.value)
    assert msg.startswith("--ttft-slo-s: ") and "\n" not in msg


def test_a_bad_class_value_names_the_field():
    with pytest.raises(ValueError, match="ttft_s_per_1k_tokens: expected a number >= 0"):
        SLOClass(2.0, -0.1)
    with pytest.raises(ValueError, match="tpot_s: expected a number > 0"):
        SLOClass(2.0, 0.0, 0.0)
    with pytest.raises(InputError, match="--tpot-slo-s"):
        parse_slo("2", 0.0)


def test_the_controller_config_takes_the_class_and_names_a_bad_field():
    from rlscale.deploy.config import SLOConfig

    slo = validate_model({"ttft_s": 2, "ttft_s_per_1k_tokens": 0.5}, SLOConfig, "controller.yaml")
    assert slo.slo_class() == SLOClass(2.0, 0.5, DEFAULT_TPOT_SLO_S)
    # what the live side can hold: the target at the interval's observed mean prompt
    assert slo.ttft_target_s(4_000.0) == pytest.approx(4.0)
    with pytest.raises(InputError) as e:
        validate_model({"ttft_s_per_1k_tokens": -1}, SLOConfig, "controller.yaml")
    assert "controller.yaml, field 'ttft_s_per_1k_tokens'" in str(e.value)


def test_the_training_config_takes_the_slope_and_names_a_bad_value(tmp_path):
    from rlscale.envs.core import EnvConfig

    env = EnvConfig(ttft_slo_s_per_1k_tokens=0.25)
    assert env.sim_config().slo == SLOClass(DEFAULT_TTFT_SLO_S, 0.25, DEFAULT_TPOT_SLO_S)
    with pytest.raises(InputError) as e:
        validate_model({"ttft_slo_s_per_1k_tokens": -1}, EnvConfig, "training/x.yaml")
    assert "field 'ttft_slo_s_per_1k_tokens'" in str(e.value)


def test_the_promql_target_is_the_class_at_the_observed_mean_prompt():
    from rlscale.deploy.promql import ttft_target_query

    assert ttft_target_query(2.0, 0.0) == "vector(2)"
    q = ttft_target_query(2.0, 0.5)
    assert q.startswith("2 + 0.5 * (") and "prompt_tokens_total" in q
    assert "request_success_total" in q and q.endswith("/ 1000")
