"""Issue 14's long-prompt workload: the shared Azure conv trace with prompts x10 (~11.5k tokens)
on the 70B profile. With the flat 2 s TTFT SLO about 3 % of its requests miss even on idle
replicas, so `rlscale evaluate` stops with one line that says so (exit 2); with a TTFT that grows
with the prompt it evaluates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rlscale.cli import app, register

register(app)
PROFILE = "llama-3.1-70b-fp8-4xh100"


@pytest.fixture(scope="module")
def long_prompts(shared_data, tmp_path_factory):
    """Azure conv, prompts x10, as a workload file (`traces convert --prompt-scale`)."""
    out = tmp_path_factory.mktemp("slo") / "conv_x10.parquet"
    res = CliRunner().invoke(
        app,
        [
            "traces", "convert", str(shared_data / "azure_llm_2023_conv.csv"), str(out),
            "--interval-s", "15", "--prompt-scale", "10", "--name", "conv-x10",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def _evaluate(trace, out, *extra):
    return [
        "evaluate", "--trace", f"{trace}@0:0.01", "--profile", PROFILE, "--policy", "static:14",
        "--seeds", "1", "--baseline", "static:14", "--no-plots", "--no-progress", "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_an_unattainable_slo_is_one_line_with_the_share_and_a_fix_and_exit_2(
    long_prompts, tmp_path
):
    proc = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *_evaluate(long_prompts, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"conv-x10@0-0.01d on {PROFILE}: " in err and "even on idle replicas" in err
    share = float(err.split(" % of requests miss")[0].rsplit(" ", 1)[1])
    assert 1.0 < share < 10.0, err  # the share affected, in percent
    assert "--ttft-slo-s '2s+" in err and "/1k'" in err and "--slo-target 0.9" in err
    assert "replica_capacity_rps" not in err  # the old validation error
    assert not (tmp_path / "report.json").exists()


def test_a_per_length_ttft_slo_evaluates_the_long_prompt_workload(long_prompts, tmp_path):
    res = CliRunner().invoke(app, _evaluate(long_prompts, tmp_path, "--ttft-slo-s", "2s+0.25s/1k"))
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["meta"]["sim_config"]["ttft_slo_s_per_1k_tokens"] == 0.25
    (info,) = report["workloads"]
    assert info["mean_prompt_tokens"] > 10_000 and info["idle_slo_share"] > 0.999
    static = [r for r in report["records"] if r["policy"] == "static:14" and r["seed"] == "mean"]
    assert static[0]["slo_attainment"] > 0.95
    md = (tmp_path / "report.md").read_text()
    assert "TTFT <= 2 s + 0.25 s per 1k prompt tokens and TPOT <= 100 ms" in md


def test_the_flat_slo_is_scored_as_it_is_below_its_idle_share(long_prompts, tmp_path):
    # the escape the message offers: a target the idle fleet reaches
    res = CliRunner().invoke(app, _evaluate(long_prompts, tmp_path, "--slo-target", "0.95"))
    assert res.exit_code == 0, res.output
    (info,) = json.loads((tmp_path / "report.json").read_text())["workloads"]
    assert 0.95 <= info["idle_slo_share"] < 0.99


def test_a_bad_slo_spec_is_one_line_naming_the_option(long_prompts, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlscale.cli",
            *_evaluate(long_prompts, tmp_path, "--ttft-slo-s", "2s+fast"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: --ttft-slo-s: expected seconds"), proc.stderr
