"""`rlscale whatif`: the user's HPA and their trace -> every policy on it, at equal SLO, and the
recommended setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from rlscale.cli import whatif as whatif_cli
from rlscale.errors import InputError
from rlscale.evaluation.evaluate import EvalSettings
from rlscale.evaluation.whatif import (
    find_checkpoint,
    plan_whatif,
    recommend,
    recommended_manifest,
    run_whatif,
    write_whatif,
)
from rlscale.profiles.model import load_profile
from rlscale.traces.loaders import save_workload
from rlscale.traces.workload import Workload

PROFILE = load_profile("llama-3.1-8b-h100")
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "mine"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
        "minReplicas": 1,
        "maxReplicas": 9,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "vllm:num_requests_waiting"},
                    "target": {"type": "AverageValue", "averageValue": "5"},
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two hours of traffic at 40-110 req/s (a ramp and a burst), 1-minute steps, written in the
    workload format `traces export` writes; and the user's HPA manifest."""
    d = tmp_path_factory.mktemp("whatif")
    minutes = np.arange(120)
    rate = 40 + 50 * np.clip((minutes - 20) / 40, 0, 1) + 20 * ((minutes >= 80) & (minutes < 90))
    w = Workload(
        name="mine",
        source="test",
        interval_s=60.0,
        arrivals=rate * 60.0,
        prompt_tokens=np.full(120, 900.0),
        output_tokens=np.full(120, 180.0),
        start_s=1_700_000_000.0,
    )
    trace = save_workload(w, d / "mine.parquet")
    hpa = d / "my-hpa.yaml"
    hpa.write_text(yaml.safe_dump(HPA))
    return trace, hpa


def _settings(**kw: object) -> EvalSettings:
    return EvalSettings(seeds=(0,), min_replicas=1, max_replicas=9, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def result(files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    trace, hpa = files
    plan = plan_whatif(
        str(trace),
        PROFILE,
        hpa,
        policies=["tuned"],
        frontiers=[f"mine=hpa:{hpa}#target_scale={{0.5,1,2}}", "target:{0.6,0.8}"],
        settings=_settings(),
    )
    res = run_whatif(plan)
    res.files = write_whatif(res, tmp_path_factory.mktemp("out"))
    return res


def test_the_defaults_are_the_hpa_swept_target_tuned_ppo_and_the_oracle(
    files: tuple[Path, Path],
) -> None:
    trace, hpa = files
    plan = plan_whatif(str(trace), PROFILE, hpa)
    assert plan.hpa_spec == f"hpa:{hpa}#target_scale=1"
    assert plan.settings.baseline == plan.hpa_spec and plan.settings.rescale is False
    # the replica bounds of the policies without their own are the manifest's
    assert (plan.settings.min_replicas, plan.settings.max_replicas) == (1, 9)
    specs = plan.specs
    assert "tuned" in specs and "oracle" in specs
    assert f"ppo:{find_checkpoint(PROFILE)}" in specs
    assert [s for s in specs if s.startswith("target:")] == [
        "target:0.6",
        "target:0.7",
        "target:0.8",
        "target:0.9",
    ]
    assert sum(s.startswith(f"hpa:{hpa}") for s in specs) == 5
    assert plan_whatif(str(trace), PROFILE, hpa, sweep=False).specs == [
        f"hpa:{hpa}",
        "tuned",
        f"ppo:{find_checkpoint(PROFILE)}",
        "oracle",
    ]


def test_no_checkpoint_for_an_unknown_profile_means_no_ppo(files: tuple[Path, Path]) -> None:
    trace, hpa = files
    mine = PROFILE.model_copy(update={"name": "my-own-service"})
    assert find_checkpoint(mine) is None
    assert not any(s.startswith("ppo:") for s in plan_whatif(str(trace), mine, hpa).specs)


def test_the_trace_runs_as_recorded(result) -> None:
    info = next(iter(result.evaluation.workloads.values()))
    assert info["scale_factor"] == 1.0
    want_rps = np.mean(40 + 50 * np.clip((np.arange(120) - 20) / 40, 0, 1)) + 20 * 10 / 120
    assert info["mean_rps"] == pytest.approx(want_rps, rel=1e-9)
    assert result.days == pytest.approx(2 / 24)
    # every request of the trace was offered to every policy
    for r in result.rows:
        assert r["requests"] == pytest.approx(want_rps * 7200, rel=1e-6)


def test_a_row_per_policy_with_the_per_day_numbers(result) -> None:
    specs = {r["spec"] for r in result.rows}
    assert specs == set(result.plan.specs)
    for r in result.rows:
        assert r["cost_usd_per_day"] == pytest.approx(r["cost_usd"] / result.days)
        assert r["scale_events_per_day"] == pytest.approx(r["scale_events"] / result.days)
        assert r["cold_starts_per_day"] == pytest.approx(r["cold_starts"] / result.days)
    base = result.baseline_row
    assert base["as_deployed"] and base["cost_vs_baseline"] == pytest.approx(1.0)
    # the oracle is the lower bound on cost among the policies at its attainment or below
    oracle = next(r for r in result.rows if r["kind"] == "oracle")
    assert oracle["cost_vs_oracle"] == pytest.approx(1.0)


def test_the_recommendation_is_the_cheapest_deployable_point_meeting_the_target(result) -> None:
    rec = result.recommendation
    assert rec is not None
    target = result.plan.settings.slo_target
    meeting = [r for r in result.rows if r["kind"] != "oracle" and r["slo_attainment"] >= target]
    if meeting:
        assert rec.met and rec.row["cost_usd"] == min(r["cost_usd"] for r in meeting)
    else:
        assert not rec.met
    assert rec.row["kind"] != "oracle"


def _row(spec: str, cost: float, slo: float) -> dict:
    return {"spec": spec, "kind": spec.partition(":")[0], "cost_usd": cost, "slo_attainment": slo}


def test_recommend_by_hand() -> None:
    rows = [
        _row("oracle", 50, 0.999),
        _row("target:0.9", 70, 0.985),
        _row("target:0.8", 80, 0.992),
        _row("tuned", 90, 0.999),
    ]
    rec = recommend(rows, 0.99)
    assert rec is not None and rec.met and rec.row["spec"] == "target:0.8"
    rec = recommend(rows, 0.9995)
    assert rec is not None and not rec.met and rec.row["spec"] == "tuned"
    assert recommend([_row("oracle", 1, 1.0)], 0.99) is None


def test_the_report_files(result) -> None:
    names = {p.name for p in result.files}
    assert {"whatif.md", "whatif.json", "whatif.csv"} <= names
    assert any(n.startswith("replicas_") and n.endswith(".png") for n in names)
    assert any(n.startswith("frontier_") and n.endswith(".png") for n in names)
    md = next(p for p in result.files if p.name == "whatif.md").read_text()
    assert "## Recommended setting" in md and "## At equal SLO" in md
    for r in result.rows:
        assert f"| {r['label']} |" in md
    assert "(as deployed)" in md
    doc = json.loads(next(p for p in result.files if p.name == "whatif.json").read_text())
    assert doc["meta"]["rescale"] is False
    assert doc["whatif"]["recommendation"]["spec"] == result.recommendation.row["spec"]
    assert len(doc["whatif"]["rows"]) == len(result.rows)


def test_a_recommended_hpa_scale_is_written_as_a_manifest(result) -> None:
    rec = result.recommendation
    original = rec.row
    try:
        rec.row = {
            **next(r for r in result.rows if r["spec"].endswith("target_scale=2")),
        }
        rec.met = True
        doc = recommended_manifest(result)
    finally:
        rec.row = original
    assert doc is not None
    target = doc["spec"]["metrics"][0]["pods"]["target"]
    assert target == {"type": "AverageValue", "averageValue": "10"}
    assert doc["spec"]["maxReplicas"] == 9
    assert "targets x 2" in doc["metadata"]["annotations"]["rlscale.io/whatif"]


def test_bad_inputs_are_one_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    trace, hpa = files
    with pytest.raises(InputError, match="file not found"):
        plan_whatif(str(trace), PROFILE, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**HPA, "spec": {**HPA["spec"], "maxReplica": 3}}))
    with pytest.raises(InputError, match="maxReplica"):
        plan_whatif(str(trace), PROFILE, bad)
    odd = tmp_path / "a#b.yaml"
    odd.write_text(yaml.safe_dump(HPA))
    with pytest.raises(InputError, match="must not contain"):
        plan_whatif(str(trace), PROFILE, odd)


def _app() -> typer.Typer:
    app = typer.Typer()
    whatif_cli.register(app)

    @app.command("noop")
    def noop() -> None:
        pass

    return app


def test_cli_writes_the_report(files: tuple[Path, Path], tmp_path: Path) -> None:
    trace, hpa = files
    out = tmp_path / "report"
    result = CliRunner().invoke(
        _app(),
        [
            "whatif",
            "--hpa",
            str(hpa),
            "--trace",
            str(trace),
            "--no-sweep",
            "-p",
            "target:0.7",
            "--seeds",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "SLO target" in result.output and "report:" in result.output
    md = (out / "whatif.md").read_text()
    assert "| target:0.7 |" in md and "| oracle |" in md and "(as deployed)" in md


def test_cli_typo_fails_before_simulating(files: tuple[Path, Path], tmp_path: Path) -> None:
    trace, hpa = files
    result = CliRunner().invoke(
        _app(),
        ["whatif", "--hpa", str(hpa), "--trace", str(trace), "-p", "tunde", "--out", str(tmp_path)],
    )
    assert isinstance(result.exception, InputError) and "unknown policy" in str(result.exception)
    assert not (tmp_path / "whatif.md").exists()
