"""`rlscale sandbox` as a user runs it: it prints where things are, kubectl works against it, and
Ctrl-C stops everything, Prometheus included."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rlscale.profiles.model import ServiceProfile


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.fixture
def cli_process(
    tmp_path: Path, tiny_profile: ServiceProfile
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    profile_path = tmp_path / "tiny.yaml"
    profile_path.write_text(yaml.safe_dump(tiny_profile.model_dump(mode="json")))
    kubeconfig = tmp_path / "kubeconfig.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlscale.cli",
            "sandbox",
            "--profile",
            str(profile_path),
            "--rate",
            "5",
            "--time-scale",
            "30",
            "--replicas",
            "2",
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc, kubeconfig
    finally:
        if proc.poll() is None:
            proc.kill()  # by its own PID; the Prometheus child dies with it (PR_SET_PDEATHSIG)
            proc.wait(10)


@pytest.mark.prometheus
def test_rlscale_sandbox_prints_kubeconfig_and_prometheus_and_ctrl_c_stops_everything(
    prometheus_binary: str, cli_process: tuple[subprocess.Popen[str], Path], kubectl_home: Path
) -> None:
    proc, kubeconfig = cli_process
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    printed: list[str] = []
    deadline = time.monotonic() + 30
    while not printed or not printed[-1].startswith("Ctrl-C"):
        assert proc.poll() is None, "".join(printed)
        try:
            printed.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        except queue.Empty:
            pytest.fail(f"rlscale sandbox printed no banner within 30 s: {''.join(printed)}")
    text = "".join(printed)
    assert f"kubeconfig:  {kubeconfig}" in text
    prom_line = next(line for line in printed if "Prometheus:" in line)
    prom_url = prom_line.split()[1]
    prom_pid = int(prom_line.split("(pid ")[1].rstrip(")\n"))
    assert prom_url.startswith("http://127.0.0.1:") and alive(prom_pid)
    api_url = next(line for line in printed if "API server:" in line).split()[-1]
    assert api_url.startswith("http://127.0.0.1:")

    env = {**os.environ, "HOME": str(kubectl_home)}
    deadline = time.monotonic() + 15
    while True:
        out = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "get", "pods", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
            check=True,
        ).stdout
        rows = [line.split() for line in out.splitlines()]
        if len(rows) == 2 and all(r[1] == "1/1" for r in rows):
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.2)

    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    time.sleep(0.1)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert "sandbox stopped" in "".join(rest)
    assert not alive(prom_pid), "Prometheus outlived rlscale sandbox"
    refused = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "pods", "--request-timeout=2s"],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
    )
    assert refused.returncode != 0
