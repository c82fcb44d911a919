"""The tuned rule: its manifest form, the batched trial evaluation, the tuning entry point and
the shipped manifests."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rlscale.cli import tune as tune_cli
from rlscale.errors import InputError
from rlscale.evaluation.rollout import rollout
from rlscale.policies.hpa import load_hpa_manifest
from rlscale.policies.registry import make_policy
from rlscale.policies.tuned import TunedRuleParams, manifest_for, policy_for, tuned_manifest_path
from rlscale.profiles.model import load_profile, shipped_profiles
from rlscale.serving.model import SimConfig
from rlscale.traces.workload import Workload
from rlscale.training.tune import evaluate_batch, load_entry, score, tune
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


def test_every_signal_and_behaviour_reaches_the_hpa():
    p = TunedRuleParams(
        queue_per_replica=None,
        request_rps_per_replica=17.0,
        prompt_tokens_per_s_per_replica=19_600.0,
        output_tokens_per_s_per_replica=3_600.0,
        ttft_p95_s=1.25,
        scale_up_window_s=30,
        scale_up_percent=200,
        scale_up_pods=2,
        scale_up_period_s=60,
        scale_down_window_s=120,
        scale_down_percent=5,
        scale_down_period_s=120,
        tolerance=0.05,
    )
    pol = policy_for(p)
    got = {m.name: (m.source.field, m.target) for m in pol.config.metrics}
    assert got == {
        "request_rate": ("arrival_rps", 17.0),
        "prompt_tokens_per_second": ("prompt_tokens_per_s", 19_600.0),
        "generation_tokens_per_second": ("output_tokens_per_s", 3_600.0),
        "ttft_p95_seconds": ("ttft_p95_s", 1.25),
    }
    up, down = pol.limits.scale_up, pol.limits.scale_down
    assert [(q.type, q.value, q.period_s) for q in up.policies] == [
        ("Percent", 200, 60),
        ("Pods", 2, 60),
    ]
    assert up.stabilization_window_s == 30 and down.stabilization_window_s == 120
    assert [(q.type, q.value, q.period_s) for q in down.policies] == [("Percent", 5, 120)]
    assert pol.config.tolerances.scale_up == pol.config.tolerances.scale_down == 0.05


def test_a_ttft_guard_alone_is_refused_because_it_sizes_nothing():
    with pytest.raises(ValueError, match="at least one load signal"):
        TunedRuleParams(queue_per_replica=None, ttft_p95_s=1.0)


def test_a_request_rate_rule_scales_out_with_the_rate_per_pod():
    # 8 ready pods at 200 req/s = 25 req/s a pod against a 17 req/s target -> ceil(8 x 25/17) = 12
    from rlscale.contract import IntervalMetrics

    pol = policy_for(TunedRuleParams(queue_per_replica=None, request_rps_per_replica=17.0))
    m = IntervalMetrics(
        time_s=15.0, interval_s=15.0, arrival_rps=200.0, prompt_tokens_per_s=2.3e5,
        output_tokens_per_s=4.2e4, requests_waiting=0.0, requests_running=80.0,
        kv_cache_usage=0.3, gpu_utilization_pct=99.0, ttft_p50_s=0.1, ttft_p95_s=0.2,
        ttft_p99_s=0.3, tpot_p50_s=0.02, tpot_p95_s=0.03, tpot_p99_s=0.04,
        replicas_desired=8.0, replicas_ready=8.0, replicas_starting=0.0, replicas_warm=0.0,
        replicas_draining=0.0,
    )  # fmt: skip
    assert pol.decide([m]).replicas == 12


def test_a_prompt_shift_entry_multiplies_the_prompts_and_a_bad_one_is_named(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,rps\n" + "".join(f"{60 * i},{10 + i}\n" for i in range(30)))
    plain = load_entry(str(trace), 15.0)
    shifted = load_entry(f"{trace}~prompts=4", 15.0)
    assert np.allclose(shifted.prompt_tokens, 4 * plain.prompt_tokens)
    assert np.allclose(shifted.arrivals, plain.arrivals) and "prompts×4" in shifted.name
    with pytest.raises(InputError, match="expected ~prompts=K"):
        load_entry(f"{trace}~outputs=2", 15.0)


def test_the_tuner_ships_the_best_finalist_on_the_validation_windows(tmp_path):
    t = np.arange(0, 3600, 60)
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("timestamp,rps\n" + "".join(f"{a},{20 + 30 * a / 3600:.2f}\n" for a in t))
    val.write_text("timestamp,rps\n" + "".join(f"{a},{50 - 30 * a / 3600:.2f}\n" for a in t))
    params, record = tune(
        load_profile("llama-3.1-8b-h100"),
        [str(train)],
        validate=[str(val), f"{val}~prompts=2"],
        trials=6,
        batch=6,
        finalists=3,
        validation_seeds=2,
        log=lambda *_: None,
    )
    sel = record["selection"]
    assert sel["finalists"] == 3 and sel["seeds"] == [0, 1] and len(sel["results"]) == 2
    finals = sel["finalist_scores"]
    # the finalists are the best on training, the shipped one the best of them on validation
    assert [f["train"] for f in finals] == sorted(f["train"] for f in finals)
    assert sel["score"] == min(f["validation"] for f in finals)
    assert record["trial"] == min(finals, key=lambda f: f["validation"])["trial"]
    assert params.model_dump() == TunedRuleParams(**params.model_dump()).model_dump()


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


def test_the_score_pools_the_slo_over_the_requests_of_every_workload():
    # 98 % on a day of 1,000 requests and 99.5 % on one of 2,000 pool to 99.0 %: no shortfall;
    # weighted equally they pool to 98.75 %: 0.25 points short, 0.25 "oracles"
    res, oracle = [(100.0, 0.98), (100.0, 0.995)], [100.0, 100.0]
    assert score(res, oracle, 0.99, requests=[1000, 2000]) == pytest.approx(1.0)
    assert score(res, oracle, 0.99) == pytest.approx(1.25)


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
        "# Tuned HPA rule for llama-3.1-8b-h100 (rlscale issue #13), written by `rlscale tune`."
    )
    assert cfg.limits.min_replicas == 2 and cfg.limits.max_replicas == 20
    assert (
        notes["rlscale.io/commit"] and "request_rps_per_replica" in notes["rlscale.io/search-space"]
    )
    assert "rlscale.io/selected-on" not in notes  # --train without --validate: no selection


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


# The split of training/README.md: the tuner may read training days (0-9) and validation windows
# (day 10) of m-large and m-mid only; the test windows, Azure and deepseek-r1 never.
TEST_ONLY = ("@11", "@12", "@13", "azure", "deepseek", "synthetic")


@pytest.mark.parametrize("name", shipped_profiles())
def test_every_shipped_tuned_manifest_records_its_provenance_and_saw_no_test_window(name):
    notes = dict(load_hpa_manifest(tuned_manifest_path(name)).annotations)
    for key in (
        "rlscale.io/tuned-by",
        "rlscale.io/tuned-at",
        "rlscale.io/commit",
        "rlscale.io/search-space",
        "rlscale.io/score",
        "rlscale.io/selection-score",
    ):
        assert notes.get(key), key
    seen = notes["rlscale.io/tuned-on"] + ", " + notes["rlscale.io/selected-on"]
    assert "m-large" in seen and "m-mid" in seen
    assert not any(bad in seen for bad in TEST_ONLY), seen
    assert all("@10:10.5" in w for w in notes["rlscale.io/selected-on"].split(", "))
