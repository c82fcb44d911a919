"""The tuned rule: its manifest form, the batched trial evaluation, the tuning entry point and
the shipped manifests."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rlscale.cli import tune as tune_cli
from rlscale.evaluation.rollout import rollout
from rlscale.policies.hpa import load_hpa_manifest
from rlscale.policies.registry import make_policy
from rlscale.policies.tuned import TunedRuleParams, manifest_for, policy_for, tuned_manifest_path
from rlscale.profiles.model import load_profile, shipped_profiles
from rlscale.serving.model import SimConfig
from rlscale.traces.workload import Workload
from rlscale.training.tune import evaluate_batch, score
from tests.conftest import make_profile


def ramp(bins: int = 240, low: float = 20.0, high: float = 120.0, name: str = "ramp") -> Workload:
    rate = np.linspace(low, high, bins)
    return Workload(
        name=name,
        source="test",
        interval_s=15.0,
        arrivals=rate * 15.0,
        prompt_tokens=np.full(bins, 1000.0),
        output_tokens=np.full(bins, 200.0),
        prompt_tokens_cv=0.5,
    )


def test_parameters_become_a_valid_hpa_manifest():
    p = TunedRuleParams(
        queue_per_replica=3.5,
        kv_cache_usage=0.42,
        gpu_utilization=None,
        scale_down_window_s=120,
        scale_down_percent=25,
    )
    pol = policy_for(p)
    names = [(m.name, m.target) for m in pol.config.metrics]
    assert names == [("request_queue_size", 3.5), ("kv_cache_usage", pytest.approx(0.42))]
    assert pol.limits.scale_down.stabilization_window_s == 120
    assert pol.limits.scale_down.policies[0].value == 25
    assert manifest_for(p)["kind"] == "HorizontalPodAutoscaler"


def test_a_batch_of_trials_scores_each_rule_on_each_workload_exactly_as_a_rollout_does():
    # a fixed cold start makes the simulator deterministic, so batch and rollout must agree
    prof = make_profile(cold_start_s=(30.0, 30.0, 30.0))
    ws = [ramp(name="a"), ramp(low=60.0, high=20.0, name="b")]
    rules = [
        TunedRuleParams(queue_per_replica=50.0, kv_cache_usage=0.6),
        TunedRuleParams(queue_per_replica=1.0, kv_cache_usage=0.1),
    ]
    res = evaluate_batch(rules, prof, ws, SimConfig())
    for i, rule in enumerate(rules):
        pol = policy_for(rule)
        for j, w in enumerate(ws):
            ref = rollout(lambda s, pol=pol: pol, prof, w, limits=pol.limits).summaries[0]
            assert res[i][j] == pytest.approx((ref.cost_usd, ref.slo_attainment), rel=1e-9)
    assert res[0][0] != res[1][0]


def test_the_score_ranks_any_slo_miss_below_any_rule_that_meets_it():
    oracle = [100.0]
    assert score([(150.0, 0.995)], oracle, 0.99) < score([(101.0, 0.985)], oracle, 0.99)


def tune_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    tune_cli.register(app)
    return app


def test_the_tune_command_writes_an_annotated_manifest_that_loads(tmp_path):
    t = np.arange(0, 3600, 60)
    trace = tmp_path / "train.csv"
    trace.write_text("timestamp,rps\n" + "".join(f"{a},{20 + 30 * a / 3600:.2f}\n" for a in t))
    out = tmp_path / "tuned.yaml"
    res = CliRunner().invoke(
        tune_app(),
        [
            "tune",
            "--profile",
            "llama-3.1-8b-h100",
            "--train",
            str(trace),
            "--trials",
            "2",
            "--batch",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    cfg = load_hpa_manifest(out)
    notes = dict(cfg.annotations)
    assert (
        notes["rlscale.io/tuned-on"].endswith("train.csv")
        and "2 trials" in notes["rlscale.io/score"]
    )
    assert notes["rlscale.io/tuned-by"] == (
        f"rlscale tune --profile llama-3.1-8b-h100 --trials 2 --batch 2 --train {trace} --out {out}"
    )
    assert out.read_text().startswith(
        "# Tuned HPA rule for llama-3.1-8b-h100 (rlscale issue #3), written by `rlscale tune`."
    )
    assert cfg.limits.min_replicas == 2 and cfg.limits.max_replicas == 20


def test_the_tune_command_names_a_bad_training_workload_in_one_line(tmp_path):
    res = CliRunner().invoke(
        tune_app(),
        [
            "tune",
            "--train",
            str(tmp_path / "missing.csv"),
            "--trials",
            "1",
            "--out",
            str(tmp_path / "t.yaml"),
        ],
    )
    assert res.exit_code == 2
    assert res.output.startswith("error: ") and "missing.csv" in res.output
    assert not (tmp_path / "t.yaml").exists()


@pytest.mark.parametrize("name", shipped_profiles())
def test_every_shipped_profile_has_a_tuned_manifest(name):
    path = tuned_manifest_path(name)
    assert path.name == f"tuned-{name}.yaml"
    cfg = load_hpa_manifest(path)
    assert dict(cfg.annotations)["rlscale.io/tuned-for-profile"] == name
    f = make_policy("tuned", profile=load_profile(name), workload=ramp())
    assert f.name == "tuned" and f.limits == cfg.limits
