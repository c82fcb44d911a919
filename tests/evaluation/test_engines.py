"""`--engine requests`: the same evaluation and report on the request-level engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rlscale.cli import evaluate as evaluate_cli
from rlscale.errors import InputError
from rlscale.evaluation.evaluate import EvalSettings, request_replay
from rlscale.evaluation.rollout import rollout
from rlscale.policies.registry import make_policy
from rlscale.profiles.model import load_profile
from tests.conftest import constant_workload

PROFILE = load_profile("llama-3.1-8b-h100")


def test_both_engines_serve_a_light_steady_load_alike() -> None:
    """Half of 2 replicas' capacity for 20 minutes: both engines bill the same fleet and meet the
    SLO; the request-level one counts every synthesised request it was sent."""
    w = constant_workload(20.0, 80)
    factory = make_policy("static:2", profile=PROFILE, workload=w)
    runs = {
        e: rollout(
            factory, PROFILE, w, seeds=(0,), limits=factory.limits, engine=e, initial_replicas=2
        )
        for e in ("fluid", "requests")
    }
    fluid, req = runs["fluid"].summaries[0], runs["requests"].summaries[0]
    assert req.cost_usd == pytest.approx(fluid.cost_usd, rel=1e-6)
    assert req.requests == pytest.approx(w.arrivals.sum(), rel=0.05)
    assert fluid.slo_attainment > 0.99 and req.slo_attainment > 0.99
    assert 0 < req.ttft_p95_s < 2.0 and req.dropped == 0


def test_an_unknown_engine_fails_at_once() -> None:
    with pytest.raises(InputError, match="expected one of fluid, requests"):
        EvalSettings(engine="vidur")


def test_a_per_request_trace_is_replayed_as_recorded(shared_data: Path) -> None:
    trace = request_replay(f"{shared_data}/azure_llm_2023_conv.csv@0:0.01", 1.0)
    assert trace is not None and trace.arrival_s.max() < 0.01 * 86_400.0
    doubled = request_replay(f"{shared_data}/azure_llm_2023_conv.csv@0:0.01", 2.0)
    assert doubled is not None and len(doubled.arrival_s) == pytest.approx(
        2 * len(trace.arrival_s), rel=0.01
    )
    assert request_replay("synthetic", 1.0) is None


def test_the_evaluate_command_runs_on_the_request_level_engine(tmp_path: Path) -> None:
    p = tmp_path / "steady.csv"
    t = np.arange(0, 1800, 60)
    p.write_text("timestamp,rps\n" + "".join(f"{x},{30.0}\n" for x in t))
    app = typer.Typer()
    evaluate_cli.register(app)
    app.command("noop")(lambda: None)
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--engine",
            "requests",
            "-p",
            "static:3",
            "-p",
            "oracle",
            "--baseline",
            "static:3",
            "-t",
            str(p),
            "--seeds",
            "1",
            "--no-plots",
            "--no-progress",
            "--peak-replicas",
            "2",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = [
        x
        for x in json.loads((tmp_path / "r" / "report.json").read_text())["records"]
        if x["seed"] == "mean"
    ]
    assert {x["policy"] for x in rows} == {"static:3", "oracle"}
    assert all(0 < x["slo_attainment"] <= 1 for x in rows)
