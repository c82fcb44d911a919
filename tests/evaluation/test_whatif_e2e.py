"""Bring your own service, end to end against `rlscale sandbox`: replay traffic through emulated
vLLM pods scraped by a real Prometheus -> `rlscale traces export` -> `rlscale profiles
cold-start` from the pods in the stand-in API -> `rlscale whatif` with the user's HPA -> the
report, with a row per policy. Every step is the command a user types (`README`: Your own
service); only the time scale is the test's (1 s steps and a 1 s control interval, ~40 s)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from rlscale.profiles.model import ServiceProfile, load_profile

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

PROFILE = {
    "name": "e2e-service",
    "model": "test/tiny-llm",
    "gpu": "H100-SXM-80GB",
    "gpus_per_replica": 1,
    "latency": {
        "tpot_base_ms": 6.7,
        "tpot_ms_per_seq": 0.15,
        "prefill_base_ms": 20.0,
        "prefill_ms_per_token": 0.1,
        "kv_cache_tokens": 400_000,
        "max_batch": 256,
    },
    "cold_start": [{"name": "engine", "low_s": 2.0, "mode_s": 3.0, "high_s": 4.0}],
    "warm_wake": {"name": "wake", "low_s": 1.0, "mode_s": 1.0, "high_s": 1.0},
    "gpu_usd_per_hour": 3.0,
}
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "llm", "namespace": "e2e"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
        "minReplicas": 1,
        "maxReplicas": 6,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "vllm:num_requests_waiting"},
                    "target": {"type": "AverageValue", "averageValue": "4"},
                },
            }
        ],
    },
}
RATES_RPS = [3.0, 8.0, 4.0, 10.0, 6.0, 2.0]  # 5 s bins, looping
EXPORT_S = 24.0


def _app():
    from rlscale.cli import app, register

    if not app.registered_commands:
        register(app)
    return app


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, (args[0], result.output, result.exception)
    return result.output


def test_sandbox_to_export_to_fit_to_whatif(tmp_path: Path) -> None:
    from rlscale.sandbox.prometheus import INSTALL_HINT, find_binary
    from rlscale.sandbox.runner import Sandbox
    from rlscale.traces.workload import Workload

    if find_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the prometheus binary is missing (install it: {INSTALL_HINT})")
        pytest.skip(f"the prometheus binary is missing (install it: {INSTALL_HINT})")
    t_start = time.perf_counter()
    base = tmp_path / "base-profile.yaml"
    base.write_text(yaml.safe_dump(PROFILE))
    hpa = tmp_path / "my-hpa.yaml"
    hpa.write_text(yaml.safe_dump(HPA))
    traffic = Workload(
        name="e2e",
        source="test",
        interval_s=5.0,
        arrivals=np.array(RATES_RPS) * 5.0,
        prompt_tokens=np.full(len(RATES_RPS), 800.0),
        output_tokens=np.full(len(RATES_RPS), 150.0),
    )
    trace = tmp_path / "my-traffic.parquet"
    fitted = tmp_path / "my-profile.yaml"
    selector = 'namespace="e2e",job="vllm"'
    with Sandbox(
        ServiceProfile.model_validate(PROFILE),
        traffic,
        namespace="e2e",
        replicas=2,
        time_scale=1.0,
        scrape_interval_s=0.5,
        replay_period_s=0.1,
    ) as sb:
        sb.wait_for_ready(2, timeout_s=60)
        sb.wait_for_query(
            f"count(vllm:request_success_total{{{selector}}})",
            lambda r: bool(r) and float(r[0]["value"][1]) >= 2,
            timeout_s=60,
        )
        start = float(np.ceil(time.time())) + 1.0
        while time.time() < start + EXPORT_S + 2.0:
            time.sleep(0.25)
        _run(
            [
                "traces",
                "export",
                "--prometheus",
                str(sb.prometheus_url),
                "--selector",
                selector,
                "--start",
                f"{start:.0f}",
                "--end",
                f"{start + EXPORT_S:.0f}",
                "--step-s",
                "1",
                "--out",
                str(trace),
            ]
        )
        _run(
            [
                "profiles",
                "cold-start",
                "--kubeconfig",
                str(sb.kubeconfig_path),
                "--namespace",
                "e2e",
                "--selector",
                "app=llm",
                "--profile",
                str(base),
                "--out",
                str(fitted),
            ]
        )
    prof = load_profile(fitted)
    assert prof.sources["cold_start"].startswith("2 pods from the Kubernetes API")
    out = tmp_path / "report"
    printed = _run(
        [
            "whatif",
            "--hpa",
            str(hpa),
            "--trace",
            str(trace),
            "--profile",
            str(fitted),
            "--interval-s",
            "1",
            "--seeds",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert "report:" in printed
    md = (out / "whatif.md").read_text()
    doc = json.loads((out / "whatif.json").read_text())
    rows = doc["whatif"]["rows"]
    # the HPA swept over 5 target scales, target:U at 4 utilisations, tuned and the oracle (no
    # PPO checkpoint is shipped for this profile)
    assert len(rows) == 11
    for r in rows:
        assert f"| {r['label']} |" in md, r["label"]
        assert r["requests"] > 0
    assert "(as deployed)" in md and "## Recommended setting" in md
    assert len(list(out.glob("replicas_*.png"))) == 1
    assert len(list(out.glob("frontier_*.png"))) == 1
    # the exported traffic is what every policy was offered: the replayed rate, within the
    # export's stated round-trip tolerance (15 % per step; here the mean over the window)
    info = doc["workloads"][0]
    assert info["mean_rps"] == pytest.approx(np.mean(RATES_RPS), rel=0.15)
    elapsed = time.perf_counter() - t_start
    print(f"end to end in {elapsed:.1f} s; recommendation: {doc['whatif']['recommendation']}")
    assert elapsed < 90.0
