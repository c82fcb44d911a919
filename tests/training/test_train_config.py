"""Training configs are validated where they enter: windows, the baseline and `--set` overrides
fail at `TrainConfig.load` with one line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlscale.contract import FIELDS, ActionSpec, IntervalMetrics, ObservationSpec
from rlscale.errors import InputError
from rlscale.policies.target import TargetUtilisationPolicy
from rlscale.training.train import TrainConfig

SHIPPED = ["training/default.yaml", "training/llama-70b.yaml"]


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_load_with_their_windows_in_days(path):
    cfg = TrainConfig.load(path)
    # days 0-10 train, the first 12 h of day 10 select (what slice_h [0, 240] / [240, 252] said)
    assert [w.days for w in cfg.workloads[:4]] == [(0.0, 10.0)] * 4
    assert [w.days for w in cfg.eval.workloads] == [(10.0, 10.5)] * 3
    # the request-mix shifts train on the training days only, and one validation window is the
    # same half day with 10x prompts
    assert all(w.days == (0.0, 10.0) for w in cfg.workloads if w.prompt_scale != (1.0, 1.0))
    assert [w.prompt_scale for w in cfg.eval.workloads][-1] == (10.0, 10.0)
    assert cfg.workloads[0].file == "../shared/data/servegen_language_m-large_total_10min.csv"
    assert cfg.workloads[4].days is None


def test_the_old_slice_h_names_the_new_spelling_with_the_hours_converted():
    with pytest.raises(InputError) as e:
        TrainConfig.load(SHIPPED[0], ["workloads.0.slice_h=[240, 252]"])
    assert e.value.field == "workloads.0.slice_h"
    assert "servegen_language_m-large_total_10min.csv@10:10.5" in str(e.value)


def test_a_bad_window_fails_at_load():
    with pytest.raises(InputError, match="START < END") as e:
        TrainConfig.load(SHIPPED[0], ["workloads.1.path=trace.csv@3:1"])
    assert e.value.field == "workloads.1.path"


def test_a_misspelt_baseline_fails_at_load_listing_the_policies():
    with pytest.raises(InputError) as e:
        TrainConfig.load(SHIPPED[0], ["eval.baseline=tunde"])
    assert (
        e.value.field == "eval.baseline" and "'tunde'" in str(e.value) and "tuned" in str(e.value)
    )
    assert "\n" not in str(e.value)


def test_the_target_rule_is_spelled_target_u_and_nothing_else():
    assert TrainConfig.load(SHIPPED[0], ["eval.baseline=target:0.7"]).eval.baseline == "target:0.7"
    with pytest.raises(InputError, match="target:0.7"):
        TrainConfig.load(SHIPPED[0], ["eval.baseline=rule:0.7"])
    with pytest.raises(InputError, match="0 < U <= 1"):
        TrainConfig.load(SHIPPED[0], ["eval.baseline=target:1.5"])
    with pytest.raises(InputError, match="target:U"):
        TrainConfig.load(SHIPPED[0], ["eval.baseline=target:high"])


def test_an_override_past_the_end_of_a_list_is_one_input_error_line():
    with pytest.raises(InputError) as e:
        TrainConfig.load(SHIPPED[0], ["workloads.9.copies=2"])
    assert e.value.field == "workloads.9" and "8 entries" in str(e.value)
    assert str(e.value).startswith("training/default.yaml, field 'workloads.9': ")


def test_a_missing_config_is_named(tmp_path: Path):
    with pytest.raises(InputError, match="training config not found"):
        TrainConfig.load(tmp_path / "nope.yaml")


def _m(**kw: float) -> IntervalMetrics:
    base = {f: 0.0 for f in FIELDS}
    base.update(interval_s=15.0, replicas_ready=4.0, replicas_desired=4.0)
    base.update(kw)
    return IntervalMetrics(**base)


SPEC = ObservationSpec(
    replica_capacity_rps=22.0,
    max_batch=128.0,
    ttft_slo_s=2.0,
    tpot_slo_s=0.1,
    max_replicas=20.0,
    window=1,
)


def TargetUtilisationRule(u: float) -> TargetUtilisationPolicy:  # noqa: N802  (the baseline target:U, as it was named)
    return TargetUtilisationPolicy(u, SPEC)


def test_the_target_rule_sizes_the_fleet_as_the_action_space_does():
    # 90 rps + 300 waiting / 60 s = 95 rps; at 22 rps/replica and u = 0.8: ceil(5.40) = 6
    rule = TargetUtilisationRule(0.8)
    d = rule.decide([_m(arrival_rps=90.0, requests_waiting=300.0)])
    assert d.replicas == 6 and rule.name == "target:0.8"
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = _m(arrival_rps=float(rng.uniform(0, 500)), requests_waiting=float(rng.uniform(0, 2000)))
        u = float(rng.uniform(0.3, 0.95))
        # a[0] = -1 is u_min: the action space's count at a constant target u
        want, _ = ActionSpec(u_min=u, u_max=0.99).decode(np.array([-1.0, -1.0]), m.to_array(), SPEC)
        assert TargetUtilisationRule(u).decide([m]).replicas == int(want)


def test_the_target_rule_reads_missing_metrics_as_no_demand():
    assert (
        TargetUtilisationRule(0.7)
        .decide([_m(arrival_rps=float("nan"), requests_waiting=float("nan"))])
        .replicas
        == 0
    )


def test_the_train_command_reports_a_bad_override_as_one_line_and_exit_status_2():
    import typer
    from typer.testing import CliRunner

    from rlscale.cli import train as train_cli

    app = typer.Typer()
    train_cli.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command so typer keeps `train` as a subcommand
        pass

    r = CliRunner().invoke(app, ["train", "--config", SHIPPED[0], "--set", "workloads.9.copies=2"])
    assert r.exit_code == 2
    assert (
        "error: training/default.yaml, field 'workloads.9':" in r.output
        and "Traceback" not in r.output
    )


def test_rate_noise_is_a_cv_or_a_range_each_copy_draws_from(shared_data: Path):
    from rlscale.profiles.model import load_profile
    from rlscale.training.train import build_workloads

    cfg = TrainConfig.load(SHIPPED[0])
    assert cfg.augmentation.noise_cv == (0.05, 0.05)  # one CV, as the shipped configs say
    wide = TrainConfig.load(
        SHIPPED[0], ["augmentation.noise_cv=[0.02, 0.4]", "augmentation.noise_block_s=15"]
    ).augmentation
    assert wide.noise_cv == (0.02, 0.4) and wide.noise_block_s == 15
    for bad in ("[0.3, 0.1]", "[0, 0.2]", "3"):
        with pytest.raises(InputError) as e:
            TrainConfig.load(SHIPPED[0], [f"augmentation.noise_cv={bad}"])
        assert e.value.field == "augmentation.noise_cv"
    # each copy draws its own CV: the 15-s level of copies of one trace varies more or less
    spec = cfg.workloads[0].model_copy(
        update={"path": f"{shared_data}/servegen_language_m-large_total_10min.csv@0:1", "copies": 6}
    )
    ws = build_workloads(
        [spec], load_profile("llama-3.1-8b-h100"), 15.0, np.random.default_rng(0), wide
    )
    cvs = [float(w.meta["transforms"][-1]["noise_cv"]) for w in ws]
    assert all(0.02 <= c <= 0.4 for c in cvs) and max(cvs) / min(cvs) > 1.5
