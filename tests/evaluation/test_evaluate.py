"""`rlscale evaluate`: the evaluation matrix, its report files, the command and its gate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rlscale.cli import evaluate as evaluate_cli
from rlscale.errors import InputError
from rlscale.evaluation.evaluate import EvalSettings, parse_trace_arg, run_evaluation
from rlscale.evaluation.report import write_report
from rlscale.profiles.model import load_profile

REQUIRED = (
    "policy",
    "workload",
    "seed",
    "gpu_hours",
    "cost_usd",
    "cost_vs_oracle",
    "slo_attainment",
    "ttft_p95_s",
    "tpot_p95_s",
    "dropped",
    "scale_events",
    "cold_starts",
)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """Two hours of a rate trace with a morning ramp and a burst, one row a minute."""
    d = tmp_path_factory.mktemp("trace")
    p = d / "ramp.csv"
    t = np.arange(0, 7200, 60)
    rps = 20 + 60 * (t / 7200) + np.where((t > 3000) & (t < 3600), 40, 0)
    p.write_text("timestamp,rps\n" + "".join(f"{a},{b:.3f}\n" for a, b in zip(t, rps, strict=True)))
    return p


@pytest.fixture(scope="module")
def result(trace):
    prof = load_profile("llama-3.1-8b-h100")
    return run_evaluation(
        ["static", "hpa", "threshold", "predictive"],
        [str(trace)],
        [prof],
        EvalSettings(seeds=(0, 1), baseline="hpa"),
    )


def test_every_policy_sees_the_same_workload_and_seeds(result):
    per_seed = [r for r in result.records if r["seed"] != "mean"]
    assert {r["policy"] for r in per_seed} == {"static", "hpa", "threshold", "predictive", "oracle"}
    assert len({r["requests"] for r in per_seed}) == 1  # the identical workload for all
    assert sorted({r["seed"] for r in per_seed}) == [0, 1]


def test_records_carry_the_fields_scripts_rely_on(result):
    for r in result.records:
        for k in REQUIRED:
            assert k in r, k
    aggs = {r["policy"]: r for r in result.aggregates()}
    assert aggs["oracle"]["cost_vs_oracle"] == pytest.approx(1.0)
    assert aggs["hpa"]["cost_vs_baseline"] == pytest.approx(1.0)
    assert aggs["oracle"]["slo_attainment"] >= 0.98
    # the oracle is the cheapest schedule here
    assert all(a["cost_vs_oracle"] >= 0.99 for a in aggs.values())
    assert aggs["static"]["cost_usd_std"] == pytest.approx(0.0, abs=1e-9)


def test_the_report_is_written_as_json_csv_markdown_and_plots(result, tmp_path):
    files = write_report(result, tmp_path)
    names = {f.name for f in files}
    assert {"report.json", "report.csv", "report.md"} <= names
    assert any(n.startswith("timeline_") for n in names) and any(
        n.startswith("cost_vs_slo_") for n in names
    )
    data = json.loads((tmp_path / "report.json").read_text())
    assert len(data["records"]) == 5 * 3  # 5 policies x (2 seeds + aggregate)
    assert data["policies"]["hpa"]["limits"]["scale_down"]["stabilization_window_s"] == 300
    md = (tmp_path / "report.md").read_text()
    assert "| oracle |" in md and "x oracle" in md
    assert (tmp_path / "report.csv").read_text().splitlines()[0].startswith("policy,")


def test_trace_arguments_may_cut_days():
    assert parse_trace_arg("a.csv@7:9") == ("a.csv", (7.0, 9.0))
    assert parse_trace_arg("synthetic") == ("synthetic", None)
    with pytest.raises(InputError):
        parse_trace_arg("a.csv@9:7")


def cli():
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    evaluate_cli.register(app)
    return app


def test_the_command_exits_non_zero_and_names_the_missed_requirement(trace, tmp_path):
    args = [
        "evaluate",
        "--trace",
        str(trace),
        "--policy",
        "static",
        "--seeds",
        "1",
        "--baseline",
        "static",
        "--no-plots",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    res = CliRunner().invoke(cli(), args + ["--gate", "cost<=0.5*oracle"])
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.output and "cost<=0.5*oracle" in res.output
    res = CliRunner().invoke(cli(), args + ["--gate", "cost<=3*oracle", "--gate", "slo>=0.9"])
    assert res.exit_code == 0, res.output
    assert "gate passed" in res.output
    assert (tmp_path / "report.json").exists()


def test_bad_input_gets_a_one_line_error_and_exit_status_2(tmp_path):
    bad = tmp_path / "hpa.yaml"
    bad.write_text(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec:\n  maxReplicas: 5\n  metrics:\n"
        "  - type: Pods\n    pods: {metric: {name: cpu_load}, target: {type: AverageValue, averageValue: '1'}}\n"
    )
    for args, expected in (
        (["--policy", f"hpa:{bad}"], "unsupported metric 'cpu_load'"),
        (["--policy", "autopilot"], "unknown policy 'autopilot'"),
        (["--policy", f"hpa:{tmp_path / 'missing.yaml'}"], "HPA manifest not found"),
        (["--trace", str(tmp_path / "none.csv")], "file not found"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "rlscale.cli",
                "evaluate",
                "--no-progress",
                "--out",
                str(tmp_path),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_workloads_are_scaled_so_the_peak_minute_needs_the_asked_replicas(trace):
    from rlscale.evaluation.evaluate import load_source, scale_for_profile

    prof = load_profile("llama-3.1-8b-h100")
    w, info = scale_for_profile(load_source(str(trace), 15.0), prof, EvalSettings(peak_replicas=12))
    p99 = float(np.quantile(w.rebin(60.0).rate_rps, 0.99))
    assert p99 == pytest.approx(12 * info["slo_capacity_rps"], rel=1e-6)
    assert info["slo_capacity_rps"] < info["knee_capacity_rps"]


def test_every_policy_starts_from_the_fleet_the_opening_minutes_need():
    from rlscale.evaluation.evaluate import opening_replicas
    from rlscale.traces.workload import Workload

    rate = np.array(
        [10.0] * 4 + [95.0] * 4 + [300.0] * 40
    )  # 15 s bins: 1 min at 10, 1 min at 95, ...
    w = Workload("open", "test", 15.0, rate * 15.0, np.full(48, 1000.0), np.full(48, 200.0))
    assert (
        opening_replicas(w, 20.0, opening_s=120.0) == 5
    )  # busiest of the first 2 minutes: 95 / 20
    assert opening_replicas(w, 20.0, opening_s=600.0) == 15


@pytest.mark.parametrize(("bins", "peak_rps"), [(2, 6.0), (8, 8.0)])
def test_the_peak_minute_of_a_trace_shorter_than_a_minute_is_its_own_rate(
    bins: int, peak_rps: float
) -> None:
    from rlscale.evaluation.evaluate import scale_for_profile
    from rlscale.traces.workload import Workload

    # 15 s bins; 2 bins: 30 s at a mean 6 req/s; 8 bins: calendar minutes at 8 and 7 req/s
    rate = np.array([4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 4.0, 4.0])[:bins]
    w = Workload("short", "test", 15.0, rate * 15.0, np.full(bins, 800.0), np.full(bins, 150.0))
    settings = EvalSettings(seeds=(0,), rescale=False)
    _, info = scale_for_profile(w, load_profile("llama-3.1-8b-h100"), settings)
    assert info["peak_1min_rps"] == pytest.approx(peak_rps)
