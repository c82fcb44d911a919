"""`rlscale sandbox --write-controller-config`: a config that loads, and whose rates are per
simulated second whatever the sandbox's time scale."""

from __future__ import annotations

import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlscale.deploy.config import load_config, parse_config
from rlscale.deploy.promql import DEFAULT_QUERIES
from rlscale.deploy.sandbox_config import sandbox_controller_config, time_scaled_queries
from rlscale.sandbox.prometheus import find_binary

REPO = Path(__file__).resolve().parents[2]


def test_the_written_config_divides_the_rate_queries_and_the_clock_by_the_time_scale() -> None:
    data = sandbox_controller_config(
        prometheus_url="http://127.0.0.1:9090",
        kubeconfig="/tmp/k.yaml",
        namespace="default",
        deployment="llm",
        profile="llama-3.1-8b-h100",
        time_scale=10,
    )
    cfg = parse_config(data)
    t = cfg.targets[0]
    assert cfg.tick_s == 1.5 and t.metrics.rate_window_s == 6.0
    assert t.metrics.max_staleness_s == 6.0 and t.manual_override_hold_s == 60.0
    assert t.starting_guard_s == 90.0
    assert t.metrics.queries == time_scaled_queries(10)
    assert t.metrics.queries["arrival_rps"] == f"({DEFAULT_QUERIES['arrival_rps']}) / 10"
    assert "requests_waiting" not in t.metrics.queries  # gauges read as in a cluster
    # The shipped HPA manifest's behaviour (windows 60 s up / 300 s down, periods 60 s up /
    # 120 s down), in the sandbox's time.
    assert t.limits is not None
    assert t.limits.scale_up.stabilization_window_s == 6.0
    assert t.limits.scale_down.stabilization_window_s == 30.0
    assert [p.period_s for p in t.limits.scale_up.policies] == [6.0]
    assert [p.period_s for p in t.limits.scale_down.policies] == [12.0]
    assert (t.limits.min_replicas, t.limits.max_replicas) == (2, 20)
    # At time scale 60 a simulated minute is one scrape: the window keeps 4 scrapes.
    fast = parse_config({**data, **sandbox_controller_config(**{**_args(), "time_scale": 60})})
    assert fast.targets[0].metrics.rate_window_s == 4.0 and fast.tick_s == 1.0


def _args() -> dict[str, object]:
    return {
        "prometheus_url": "http://127.0.0.1:9090",
        "kubeconfig": "/tmp/k.yaml",
        "namespace": "default",
        "deployment": "llm",
        "profile": "llama-3.1-8b-h100",
        "time_scale": 10,
    }


RATE_RPS = 4.0  # simulated requests per second
TIME_SCALE = 10
READINGS = 4  # full readings judged, after as many to let the rate window settle


@pytest.mark.prometheus
@pytest.mark.slow
@pytest.mark.skipif(
    find_binary() is None and os.environ.get("CI") != "true",
    reason="needs the prometheus binary (apt-get install prometheus)",
)
def test_a_dry_run_tick_against_the_written_config_sees_per_second_rates(tmp_path: Path) -> None:
    from rlscale.deploy.controller import build_controller
    from rlscale.profiles.model import load_profile

    out = tmp_path / "controller.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlscale.cli",
            "sandbox",
            "--rate",
            str(RATE_RPS),
            "--time-scale",
            str(TIME_SCALE),
            "--replicas",
            "1",
            "--write-controller-config",
            str(out),
            "--duration-s",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    controller = None
    try:
        printed: list[str] = []
        deadline = time.monotonic() + 40
        while not any("controller:" in x for x in printed):
            assert proc.poll() is None, "".join(printed)
            try:
                printed.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                pytest.fail(f"no controller config line within 40 s: {''.join(printed)}")
        assert f"rlscale control --config {out}" in "".join(printed)

        check = subprocess.run(
            [sys.executable, "-m", "rlscale.cli", "control", "--config", str(out), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert check.returncode == 0 and "config OK" in check.stdout, check.stdout + check.stderr

        cfg = load_config(out)
        cfg = cfg.model_copy(
            update={
                "dry_run": True,
                "exporter": cfg.exporter.model_copy(update={"enabled": False}),
                "events": False,
            }
        )
        controller = build_controller(cfg, identity="config-test")
        seen: list[tuple[float, float, float]] = []
        deadline = time.monotonic() + 60
        while len(seen) < 2 * READINGS:
            assert time.monotonic() < deadline, f"no full readings in 60 s: {seen}"
            for r in controller.tick(time.time()):
                m = r.record.metrics
                rep = r.record.replicas
                full = rep is not None and rep.ready >= 1 and rep.starting == 0
                if m is not None and full and r.record.reason != "NoScaleDownOnPartialWindow":
                    values = (m.arrival_rps, m.prompt_tokens_per_s, m.output_tokens_per_s)
                    if all(math.isfinite(v) and v > 0 for v in values):
                        seen.append(values)
            time.sleep(cfg.tick_s)
    finally:
        if controller is not None:
            controller.close(release=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    profile = load_profile("llama-3.1-8b-h100")
    truth = (
        RATE_RPS,
        RATE_RPS * profile.typical_prompt_tokens,
        RATE_RPS * profile.typical_output_tokens,
    )
    # The first readings still hold the sandbox's start (its first batch fills at once, so the
    # output token rate reads ~30 % high for a rate window or two, more on a loaded machine):
    # judge the later half, once the window holds steady traffic only.
    steady = seen[READINGS:]
    medians = [statistics.median(s[i] for s in steady) for i in range(3)]
    # Read without the division these would be TIME_SCALE (10) times the truth.
    for name, got, want in zip(("arrivals", "prompt", "output"), medians, truth, strict=True):
        assert abs(got - want) <= 0.15 * want, (name, got, want, seen)
