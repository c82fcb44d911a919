"""`rlscale simulate` end to end on the synthetic default and on every trace format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rlscale.cli import app, register

register(app)
runner = CliRunner()


def simulate(*args: str):
    result = runner.invoke(app, ["simulate", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_simulate_runs_static_on_the_synthetic_default():
    out = simulate()
    assert "static on synthetic" in out and "SLO attainment" in out and "GPU-hours" in out


@pytest.mark.parametrize(
    "name", ["azure_llm_2023_code.csv", "servegen_reason_deepseek-r1_clients_10min.csv"]
)
def test_simulate_runs_on_real_traces(shared_data, name):
    out = simulate(
        "--trace", str(shared_data / name), "--peak-replicas", "8", "--policy", "static:8"
    )
    assert "cost" in out and "TTFT p95" in out


def _write_small_traces(tmp_path):
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 600, 3000))
    p = rng.integers(100, 3000, t.size)
    o = rng.integers(10, 500, t.size)
    jsonl = tmp_path / "reqs.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps(
                {"timestamp": int(ts * 1000), "input_length": int(a), "output_length": int(b)}
            )
            + "\n"
            for ts, a, b in zip(t, p, o, strict=True)
        )
    )
    csv = tmp_path / "reqs.csv"
    csv.write_text(
        "timestamp,prompt_tokens,output_tokens\n"
        + "".join(f"{ts:.3f},{a},{b}\n" for ts, a, b in zip(t, p, o, strict=True))
    )
    rate = tmp_path / "rate.csv"
    rate.write_text("timestamp,rps\n" + "".join(f"{60 * i},{5 + 3 * (i % 4)}\n" for i in range(10)))
    return {"jsonl": jsonl, "requests": csv, "rate": rate}


@pytest.mark.parametrize("fmt", ["jsonl", "requests", "rate"])
def test_simulate_detects_or_takes_the_format_of_user_traces(tmp_path, fmt):
    path = _write_small_traces(tmp_path)[fmt]
    out_detected = simulate("--trace", str(path), "--peak-replicas", "4")
    out_given = simulate("--trace", str(path), "--format", fmt, "--peak-replicas", "4")
    assert out_detected == out_given


def test_simulate_rejects_a_malformed_trace_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,prompt_tokens,output_tokens\n1.0,100,10\n0.5,100,-3\n")
    result = runner.invoke(app, ["simulate", "--trace", str(bad)])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "bad.csv" in str(result.exception)


def test_the_program_prints_bad_input_as_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,prompt_tokens,output_tokens\n1.0,100,10\n0.5,100,3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", "simulate", "--trace", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("error: ")
        and "bad.csv" in lines[0]
        and "timestamp" in lines[0]
    )
