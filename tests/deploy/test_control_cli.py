"""`rlscale control` at start-up: config and checkpoint checks with one-line errors; the metrics
endpoint; and the layering rule (rlscale.deploy never imports the simulator)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import typer
import yaml

from rlscale.deploy.exporter import ControllerMetrics, MetricsServer
from tests.deploy.fakes import make_checkpoint

REPO = Path(__file__).resolve().parents[2]


def rlscale(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`rlscale.cli.main()` in this process (no interpreter start-up), on a fresh app."""
    from rlscale import cli

    monkeypatch.setattr(
        cli,
        "app",
        typer.Typer(name="rlscale", add_completion=False, pretty_exceptions_enable=False),
    )
    monkeypatch.setattr(sys, "argv", ["rlscale", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def write_config(path: Path, **target: object) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "leader_election": {"enabled": False},
                "targets": [{"namespace": "llm", "deployment": "llama", **target}],
            }
        )
    )
    return path


def test_check_validates_the_config_and_loads_every_policy(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    ck = make_checkpoint(tmp_path / "ppo")
    cfg = write_config(
        tmp_path / "c.yaml", policy={"checkpoint": str(ck)}, fallback={"rule": "hpa"}
    )
    code, out, err = main(
        monkeypatch, capsys, "control", "--config", str(cfg), "--check", "--dry-run"
    )
    assert code == 0, err
    assert (
        "llm/llama: policy ppo:ppo, fallback hpa, profile llama-3.1-8b-h100, replicas 2..20, window 4, dry-run"
        in out
    )


def test_a_tampered_checkpoint_is_refused_at_start_up_with_a_clear_message(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo")
    with open(ck / "policy.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    cfg = write_config(tmp_path / "c.yaml", policy={"checkpoint": str(ck)})
    r = rlscale("control", "--config", str(cfg))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(
        "error: target llm/llama, field 'policy.checkpoint': checkpoint refused:"
    )
    assert "policy.safetensors" in line and "sha256 mismatch" in line


def test_a_mismatched_checkpoint_is_refused_at_start_up(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    ck = make_checkpoint(tmp_path / "ppo")
    cfg = write_config(
        tmp_path / "c.yaml", policy={"checkpoint": str(ck)}, profile="llama-3.1-70b-fp8-4xh100"
    )
    code, _, err = main(monkeypatch, capsys, "control", "--config", str(cfg))
    assert code == 2 and "trained for profile 'llama-3.1-8b-h100'" in err


def test_a_tick_other_than_the_checkpoints_interval_is_refused_by_check(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Issue 12: `tick_s: 5` with a checkpoint trained on 15 s intervals passed --check."""
    ck = make_checkpoint(tmp_path / "ppo", interval_s=15.0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "tick_s": 5,
                "leader_election": {"enabled": False},
                "targets": [
                    {"namespace": "llm", "deployment": "llama", "policy": {"checkpoint": str(ck)}}
                ],
            }
        )
    )
    code, out, err = main(monkeypatch, capsys, "control", "--config", str(cfg), "--check")
    assert code == 2 and "config OK" not in out
    assert "field 'tick_s'" in err and "trained on 15 s intervals" in err
    cfg.write_text(cfg.read_text().replace("tick_s: 5", "tick_s: 15"))
    code, out, err = main(monkeypatch, capsys, "control", "--config", str(cfg), "--check")
    assert code == 0 and "config OK" in out, err


def test_a_bad_config_names_file_and_field(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = write_config(tmp_path / "c.yaml", limits={"min_replicas": 5, "max_replicas": 2})
    code, _, err = main(monkeypatch, capsys, "control", "--config", str(cfg))
    assert code == 2
    assert (
        err.strip()
        == f"error: {cfg}, field 'targets.0.limits': max_replicas = 2, must be >= min_replicas (5)"
    )


def test_the_metrics_endpoint_serves_the_registry_and_stops() -> None:
    m = ControllerMetrics()
    m.leader.set(1)
    server = MetricsServer(m.registry, "127.0.0.1", 0)
    try:
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
            .read()
            .decode()
        )
        assert (
            "rlscale_leader 1.0" in body
            and "# TYPE rlscale_policy_latency_seconds histogram" in body
        )
    finally:
        server.stop()


def test_the_controller_never_imports_the_simulator() -> None:
    code = (
        "import sys, json, rlscale.cli.control, rlscale.deploy.controller, rlscale.deploy.policies, rlscale.deploy.gpu_exporter;"
        "from rlscale.deploy.policies import build_target_policies;"
        "from rlscale.deploy.config import TargetConfig;"
        "build_target_policies(TargetConfig(namespace='a', deployment='b'));"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('rlscale.envs', 'stable_baselines3', 'gymnasium')))))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
