"""Scoring on frontiers: dials, Pareto sets, interpolation without extrapolation, the scoring of an
evaluation's records, the command end to end and the gate on its numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rlscale.errors import InputError
from rlscale.evaluation.dials import expand_dial
from rlscale.evaluation.frontier import (
    BEST_RULE,
    Frontier,
    cost_at,
    gap_closed,
    pareto,
    score_frontiers,
)
from rlscale.evaluation.gate import check_gate, gate_from_args
from rlscale.policies.registry import PolicySpec, make_policy

# (SLO attainment, cost)
POINTS = [(0.90, 10.0), (0.95, 12.0), (0.93, 13.0), (0.99, 20.0), (0.99, 25.0), (0.97, 11.0)]


def test_the_pareto_set_keeps_only_points_nothing_beats_on_both_axes():
    # (0.95, 12) and (0.93, 13) lose to (0.97, 11); (0.99, 25) to (0.99, 20)
    assert pareto(POINTS) == [0, 5, 3]
    assert pareto([(0.9, 10.0), (0.9, 10.0)]) == [0]  # of equal points the first
    assert pareto([(math.nan, 1.0), (0.9, 10.0)]) == [1]
    assert pareto([]) == []


def test_cost_is_interpolated_linearly_between_neighbouring_frontier_points():
    # between (0.97, 11) and (0.99, 20): 11 + (0.98 - 0.97) / 0.02 x 9 = 15.5
    assert cost_at(POINTS, 0.98) == pytest.approx(15.5)
    # between (0.90, 10) and (0.97, 11): 10 + 0.035 / 0.07 x 1 = 10.5 (not via the dominated 0.95)
    assert cost_at(POINTS, 0.935) == pytest.approx(10.5)
    assert cost_at(POINTS, 0.97) == pytest.approx(11.0)
    assert cost_at(POINTS, 0.99) == pytest.approx(20.0)
    assert cost_at(POINTS, 0.90) == pytest.approx(10.0)


def test_a_frontier_is_never_extrapolated():
    assert math.isnan(cost_at(POINTS, 0.995))
    assert math.isnan(cost_at(POINTS, 0.85))
    assert cost_at([(0.99, 7.0)], 0.99) == 7.0  # one point: its own attainment only
    assert math.isnan(cost_at([(0.99, 7.0)], 0.98))
    assert math.isnan(cost_at([], 0.98))


def test_gap_closed_only_where_the_rule_to_oracle_gap_is_at_least_5_percent():
    assert gap_closed(100.0, 90.0, 80.0) == pytest.approx(0.5)
    assert gap_closed(100.0, 105.0, 80.0) == pytest.approx(-0.25)
    assert math.isnan(gap_closed(104.0, 100.0, 100.0))  # a 4 % gap is noise
    assert gap_closed(105.0, 100.0, 100.0) == pytest.approx(1.0)
    assert math.isnan(gap_closed(math.nan, 1.0, 1.0))


def test_dial_templates_expand_ranges_and_lists():
    specs, values = expand_dial("target:{0.5..0.7:0.05}")
    assert specs == ["target:0.5", "target:0.55", "target:0.6", "target:0.65", "target:0.7"]
    assert values == [0.5, 0.55, 0.6, 0.65, 0.7]
    specs, _ = expand_dial("ppo:ck#slo_weight={2,5,10}")
    assert specs == ["ppo:ck#slo_weight=2", "ppo:ck#slo_weight=5", "ppo:ck#slo_weight=10"]
    for bad in ("target:0.5", "target:{0.5..0.7}", "target:{0.7..0.5:0.1}", "t:{a,b}", "{1}{2}"):
        with pytest.raises(InputError):
            expand_dial(bad)


def test_frontier_names_show_the_dial_and_may_be_given():
    f = Frontier.parse("oracle#slo_target={0.95,0.99}")
    assert (f.name, f.role, f.specs) == (
        "oracle#slo_target=*",
        "oracle",
        ("oracle#slo_target=0.95", "oracle#slo_target=0.99"),
    )
    f = Frontier.parse("rl=ppo:checkpoints/x#slo_weight={2,5}")
    assert (f.name, f.role, f.template) == ("rl", "ppo", "ppo:checkpoints/x#slo_weight={2,5}")
    assert Frontier.parse("target:{0.6,0.7}").role == "rule"
    with pytest.raises(InputError):
        Frontier.parse("nosuch:{1,2}")


def test_the_dial_options_are_policy_options_checked_at_parse():
    assert PolicySpec.parse("oracle#slo_target=0.95").option("slo_target") == 0.95
    assert PolicySpec.parse("tuned#target_scale=0.8").option("target_scale") == 0.8
    assert PolicySpec.parse("threshold#gpu_up_pct=80").option("gpu_up_pct") == 80
    for bad in (
        "tuned#slo_target=0.9",
        "target:0.7#target_scale=2",
        "oracle#slo_target=1.5",
        "hpa#target_scale=-1",
        "static:3#slo_target=0.9",
    ):
        with pytest.raises(InputError):
            PolicySpec.parse(bad)


def test_scaled_targets_keep_the_behaviour():
    from rlscale.policies.hpa import load_hpa_manifest
    from rlscale.policies.tuned import tuned_manifest_path
    from rlscale.profiles.model import load_profile

    profile = load_profile("llama-3.1-8b-h100")
    cfg = load_hpa_manifest(tuned_manifest_path(profile))
    f = make_policy("tuned#target_scale=0.5", profile=profile)
    scaled = f(0).config
    assert [m.target for m in scaled.metrics] == pytest.approx([m.target / 2 for m in cfg.metrics])
    assert scaled.limits == cfg.limits and f.limits == cfg.limits
    assert f.name == "tuned#target_scale=0.5"


def _records() -> list[dict]:
    """Two seeds of a rule family, an oracle family, a candidate family and the baseline."""
    pts = {
        # spec: [(slo, cost) seed 0, seed 1]
        "tuned": [(0.985, 100.0), (0.975, 100.0)],
        "target:0.6": [(0.99, 110.0), (0.99, 110.0)],
        "target:0.8": [(0.97, 90.0), (0.97, 90.0)],
        "oracle#slo_target=0.97": [(0.97, 70.0), (0.97, 70.0)],
        "oracle#slo_target=0.99": [(0.99, 80.0), (0.99, 80.0)],
        "ppo:x#slo_weight=2": [(0.96, 80.0), (0.96, 80.0)],
        "ppo:x#slo_weight=20": [(0.98, 90.0), (0.98, 90.0)],
    }
    recs = []
    for spec, per_seed in pts.items():
        for k, (a, c) in enumerate(per_seed):
            recs.append(
                dict(
                    profile="p",
                    workload="w",
                    policy=spec,
                    spec=spec,
                    seed=k,
                    slo_attainment=a,
                    cost_usd=c,
                )  # fmt: skip
            )
        a, c = np.mean(per_seed, axis=0)
        recs.append(
            dict(
                profile="p",
                workload="w",
                policy=spec,
                spec=spec,
                seed="mean",
                slo_attainment=a,
                cost_usd=c,
            )  # fmt: skip
        )
    return recs


FAMILIES = [
    Frontier.parse("target:{0.6,0.8}"),
    Frontier.parse("oracle#slo_target={0.97,0.99}"),
    Frontier.parse("ppo:x#slo_weight={2,20}"),
]


def test_an_evaluation_is_scored_at_the_baselines_slo_by_default():
    rep = score_frontiers(_records(), FAMILIES, baseline="tuned")
    rows = {r["policy"]: r for r in rep.rows}
    # the baseline's mean attainment 0.98: rule 90 + 0.5 x 20 = 100, oracle 75, ppo 90
    assert rows["tuned"]["slo_point"] == pytest.approx(0.98)
    assert rows["target:*"]["cost@slo"] == pytest.approx(100.0)
    assert rows["oracle#slo_target=*"]["cost@slo"] == pytest.approx(75.0)
    ppo = rows["ppo:x#slo_weight=*"]
    assert ppo["cost@slo"] == pytest.approx(90.0)
    assert ppo["cost@slo_vs_best_rule"] == pytest.approx(0.9)
    assert ppo["cost@slo_vs_oracle"] == pytest.approx(1.2)
    assert ppo["gap_closed@slo"] == pytest.approx(10 / 25)
    # the one-point baseline is the best rule at its own attainment (100 = target's 100)
    assert rows["tuned"]["cost@slo"] == pytest.approx(100.0)
    assert rows[BEST_RULE]["cost@slo"] == pytest.approx(100.0)
    # per seed: seed 0 at 0.985 (ppo outside its frontier), seed 1 at 0.975
    assert ppo["cost@slo_seeds"] == 1
    # target at seed 0's 0.985: 105, at seed 1's 0.975: 95
    assert rows["target:*"]["cost@slo_std"] == pytest.approx(math.sqrt(50.0))


def test_a_fixed_slo_point_outside_a_frontier_is_missing_not_extrapolated():
    rep = score_frontiers(_records(), FAMILIES, baseline="tuned", at_slo=0.99)
    rows = {r["policy"]: r for r in rep.rows}
    assert rows["target:*"]["cost@slo"] == pytest.approx(110.0)
    assert rows["ppo:x#slo_weight=*"]["cost@slo"] is None
    assert rows["ppo:x#slo_weight=*"]["cost@slo_vs_best_rule"] is None
    assert rows["tuned"]["cost@slo"] is None
    with pytest.raises(InputError):
        score_frontiers(_records(), FAMILIES, baseline="tuned", at_slo=1.5)


def test_the_gate_reads_frontier_numbers():
    rep = score_frontiers(_records(), FAMILIES, baseline="tuned")
    gate = gate_from_args(["cost@slo<=0.9*best_rule", "cost@slo_vs_oracle<=1.25"])
    checks = check_gate(gate, [], "ppo:x#slo_weight=*", rep.rows)
    assert all(c.passed for c in checks), [c.message for c in checks]
    checks = check_gate(
        gate_from_args(["cost@slo<=0.85*tuned"]), [], "ppo:x#slo_weight=*", rep.rows
    )
    assert not checks[0].passed and "FAILED" in checks[0].message
    # outside the frontier fails, never passes
    rep99 = score_frontiers(_records(), FAMILIES, baseline="tuned", at_slo=0.99)
    checks = check_gate(gate_from_args(["gap_closed@slo>=0"]), [], "ppo:x#slo_weight=*", rep99.rows)
    assert not checks[0].passed
    with pytest.raises(InputError, match="frontier"):
        check_gate(gate_from_args(["cost@slo<=tuned"]), [], "ppo:x#slo_weight=*", None)


def test_the_command_scores_frontiers_end_to_end(tmp_path):
    t = np.arange(0, 7200, 60)
    rps = 20 + 60 * (t / 7200) + np.where((t > 3000) & (t < 3600), 40, 0)
    trace = tmp_path / "ramp.csv"
    trace.write_text(
        "timestamp,rps\n" + "".join(f"{a},{b:.3f}\n" for a, b in zip(t, rps, strict=True))
    )
    out = tmp_path / "out"
    args = [
        "evaluate",
        "--trace",
        str(trace),
        "-p",
        "tuned",
        "-f",
        "target:{0.6,0.8}",
        "-f",
        "oracle#slo_target={0.97,0.999}",
        "-f",
        "tuned#target_scale={0.7,1,1.3}",
        "--seeds",
        "2",
        "--no-progress",
        "--out",
        str(out),
        "--gate-policy",
        "tuned#target_scale=*",
    ]
    res = CliRunner().invoke(cli(), [*args, "--gate", "cost@slo<=1.0001*tuned"])
    assert res.exit_code == 0, res.output
    assert "gate passed" in res.output and "x best rule" in res.output
    report = json.loads((out / "report.json").read_text())
    fr = report["frontier"]
    assert fr["at_slo"] == "baseline:tuned"
    rows = {(r["policy"]): r for r in fr["rows"]}
    assert set(rows) >= {"tuned", "target:*", "oracle#slo_target=*", "tuned#target_scale=*"}
    # the unscaled manifest is the tuned rule itself, seed for seed
    recs = {(r["spec"], r["seed"]): r for r in report["records"]}
    for k in (0, 1, "mean"):
        assert recs[("tuned#target_scale=1", k)]["cost_usd"] == recs[("tuned", k)]["cost_usd"]
    assert rows["tuned#target_scale=*"]["cost@slo"] == pytest.approx(rows["tuned"]["cost@slo"])
    assert len(fr["points"]) == 1 + 2 + 2 + 3 + 1  # tuned, the sweeps, the plain oracle
    assert "Cost at equal SLO attainment" in (out / "report.md").read_text()
    assert "scale ev/day" in (out / "report.md").read_text()
    assert any(p.name.startswith("frontier_") for p in out.glob("*.png"))
    day = [r for r in report["records"] if r["seed"] == 0][0]
    assert day["scale_events_per_day"] == pytest.approx(day["scale_events"] * 12)  # 2 h
    assert "note: frontiers from 2 seeds" in res.output
    gate = ["--gate", "cost@slo<=0.5*best_oracle", "--no-plots", "--at-slo", "0.99"]
    res = CliRunner().invoke(cli(), [*args, *gate])
    assert res.exit_code == 1 and "FAILED" in res.output
    assert json.loads((out / "report.json").read_text())["frontier"]["at_slo"] == 0.99
    res = CliRunner().invoke(cli(), [*args[:-2], "-f", "target:{0.6..0.5:0.1}"])
    assert isinstance(res.exception, InputError) and "--frontier" in str(res.exception)


def cli() -> typer.Typer:
    from rlscale.cli import evaluate as evaluate_cli

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    evaluate_cli.register(app)
    return app
