"""One CLI vocabulary (rlscale/cli/options.py): a concept is spelled, defaulted and explained the
same way in every command that has it, and the shared trace syntax works in each."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from rlscale.cli import app, register
from rlscale.cli import options as opts
from rlscale.contract import DEFAULT_SLO_TARGET, DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.errors import InputError

register(app)
runner = CliRunner()


def _params(*path: str) -> dict:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {p.opts[0]: p for p in command.params}


COMMANDS = [
    ("simulate",),
    ("evaluate",),
    ("sandbox",),
    ("traces", "inspect"),
    ("traces", "convert"),
]


@pytest.mark.parametrize(
    ("option", "default"),
    [
        ("--seeds", None),
        ("--min-replicas", opts.DEFAULT_MIN_REPLICAS),
        ("--max-replicas", opts.DEFAULT_MAX_REPLICAS),
        ("--ttft-slo-s", opts.DEFAULT_TTFT_SLO),  # a spec string (rlscale.slo)
        ("--tpot-slo-s", DEFAULT_TPOT_SLO_S),
        ("--peak-replicas", None),
        ("--slo-target", DEFAULT_SLO_TARGET),
        ("--profile", None),
        ("--trace", None),
        ("--format", None),
    ],
)
def test_an_option_means_the_same_in_every_command(option, default):
    found = [(c, _params(*c)[option]) for c in COMMANDS if option in _params(*c)]
    assert found, option
    helps = {p.help.split(" Repeat for several")[0].split(" Default ")[0] for _, p in found}
    assert len(helps) == 1, helps
    if default is not None:
        assert {p.default for _, p in found} == {default}, found


def test_the_ttft_option_default_is_the_contracts_flat_slo():
    cfg = opts.sim_config(opts.DEFAULT_TTFT_SLO, DEFAULT_TPOT_SLO_S)
    assert (cfg.ttft_slo_s, cfg.ttft_slo_s_per_1k_tokens) == (DEFAULT_TTFT_SLO_S, 0.0)


def test_the_trace_syntax_is_the_same_argument_for_traces():
    (trace,) = (p for p in _params("traces", "inspect").values() if p.name == "path")
    assert trace.help == opts.TRACE_HELP


def _simulate(*args: str) -> str:
    result = runner.invoke(app, ["simulate", "--policy", "static:3", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_simulate_prints_the_mean_and_each_seed():
    one = _simulate("--seeds", "1")
    assert "value" in one and "seed 0" not in one
    three = _simulate("--seeds", "3")
    assert "3 seeds" in three and "mean" in three and "seed 2" in three


def test_simulate_takes_synthetic_seed_and_day_windows(tmp_path):
    assert "synthetic-default-seed4" in _simulate("--trace", "synthetic:4")
    rate = tmp_path / "rate.csv"
    rate.write_text("timestamp,rps\n" + "".join(f"{600 * i},{5 + i % 7}\n" for i in range(3 * 144)))
    out = _simulate("--trace", f"{rate}@1:2", "--peak-replicas", "2.5")  # a float, as in evaluate
    assert "rate@1-2d" in out and "24.0 h" in out


def test_traces_inspect_takes_a_day_window(tmp_path):
    rate = tmp_path / "rate.csv"
    rate.write_text("timestamp,rps\n" + "".join(f"{600 * i},{5 + i % 7}\n" for i in range(3 * 144)))
    result = runner.invoke(app, ["traces", "inspect", f"{rate}@0:1"])
    assert result.exit_code == 0, result.output
    assert "rate@0-1d" in result.output


def test_replica_bounds_are_checked():
    result = runner.invoke(app, ["simulate", "--min-replicas", "5", "--max-replicas", "3"])
    assert result.exit_code != 0 and "must be >= min_replicas" in str(result.exception)


def test_shield_settings_are_read_as_a_shield_config() -> None:
    from rlscale.serving.shield import ShieldConfig

    assert opts.shield_config(None) == ShieldConfig()
    c = opts.shield_config(["consolidation_utilisation=0.8", "lookback_s=null"])
    assert c.consolidation_utilisation == 0.8 and c.lookback_s is None
    assert c.floor_utilisation == ShieldConfig().floor_utilisation


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["consolidation=0.8"], "'consolidation': unknown field"),
        (["floor_utilisation=high"], "'floor_utilisation': Input should be a valid number"),
        (["consolidation_utilisation=0.95"], "must be <= floor_utilisation"),
        (["0.8"], "expected KEY=VALUE"),
    ],
)
def test_a_bad_shield_setting_is_one_line_naming_the_option(items, expected) -> None:
    with pytest.raises(InputError) as e:
        opts.shield_config(items)
    msg = str(e.value)
    assert msg.startswith("--shield") and expected in msg and "\n" not in msg


def test_evaluate_takes_shield_settings() -> None:
    res = runner.invoke(app, ["evaluate", "--shield", "lookback_s=-1", "--no-progress"])
    assert isinstance(res.exception, InputError)
    assert "--shield" in str(res.exception) and "lookback_s" in str(res.exception)
