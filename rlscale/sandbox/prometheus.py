"""A real Prometheus (Debian's `prometheus` package) as a child process on a free loopback port.

The sandbox writes its config — one scrape job over a file_sd target file that follows the
Ready pods, with `pod`, `namespace` and `container` target labels — starts it with a temporary
TSDB, polls `/-/ready`, and stops it by PID (SIGTERM, then SIGKILL). On Linux the child also gets
PR_SET_PDEATHSIG, so it dies with the thread that started it even if Python is killed outright.

Latency to expect: Prometheus' discovery manager hands target changes to the scraper at most
every 5 s (a fixed ticker), so a pod that turns Ready shows up in queries 0-5 s plus one scrape
interval later, and the first sample after start ~5.5 s after it. That is how it behaves in a
cluster too; tests poll (`wait_for`) instead of sleeping.

Metric spelling: Prometheus negotiates OpenMetrics, and prometheus_client >= 0.23 then exposes
`vllm:foo` as `vllm_foo` (client_python #1177). With `relabel_vllm_names=True` (the default) a
metric_relabel rule renames `vllm_*` back to `vllm:*`, so queries see one spelling.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

DEFAULT_BINARY = "/usr/bin/prometheus"
INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus"


class PrometheusError(RuntimeError):
    pass


def find_binary(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """`explicit`, else $RLSCALE_PROMETHEUS, else `prometheus` on PATH, else /usr/bin/prometheus."""
    for candidate in (
        explicit,
        os.environ.get("RLSCALE_PROMETHEUS"),
        shutil.which("prometheus"),
        DEFAULT_BINARY,
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


RELABEL_VLLM_NAMES = {
    "source_labels": ["__name__"],
    "regex": "vllm_(.+)",
    "target_label": "__name__",
    "replacement": "vllm:$1",
}


def config(
    sd_dir: Path,
    *,
    scrape_interval_s: float,
    relabel_vllm_names: bool,
    raw_job: bool = False,
    job: str = "vllm",
) -> dict[str, Any]:
    """Prometheus config: job `job` scrapes every target in `sd_dir/*.json`; with `raw_job` a
    second job `<job>-raw` scrapes the same targets without the relabel rule (tests use it to see
    what the pods really expose)."""
    interval = f"{int(round(scrape_interval_s * 1000))}ms"

    def scrape(name: str, relabel: bool) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "job_name": name,
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "file_sd_configs": [{"files": [str(sd_dir / "*.json")], "refresh_interval": "1s"}],
        }
        if relabel:
            cfg["metric_relabel_configs"] = [RELABEL_VLLM_NAMES]
        return cfg

    jobs = [scrape(job, relabel_vllm_names)]
    if raw_job:
        jobs.append(scrape(f"{job}-raw", False))
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


def write_targets(path: Path, targets: list[dict[str, Any]]) -> None:
    """Atomically replace the file_sd target file (Prometheus watches it with inotify)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets, indent=1))
    os.replace(tmp, path)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent: the child between fork and exec should do as little as possible.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class PrometheusProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        binary: str | None = None,
        scrape_interval_s: float = 1.0,
        relabel_vllm_names: bool = True,
        raw_job: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        found = find_binary(binary)
        if found is None:
            raise PrometheusError(f"no prometheus binary found (install it: {INSTALL_HINT})")
        self.binary = found
        self.workdir = Path(workdir)
        self.scrape_interval_s = scrape_interval_s
        self.relabel_vllm_names = relabel_vllm_names
        self.raw_job = raw_job
        self.host = host
        self.sd_dir = self.workdir / "file_sd"
        self.config_file = self.workdir / "prometheus.yml"
        self.log_file = self.workdir / "prometheus.log"
        self.tsdb = self.workdir / "tsdb"
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("prometheus is not started")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0, attempts: int = 3) -> None:
        """Spawn and wait until `/-/ready`."""
        self.spawn()
        self.wait_ready(timeout_s, attempts)

    def spawn(self) -> None:
        """Write the config and start the process without waiting (see `wait_ready`)."""
        self.sd_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            yaml.safe_dump(
                config(
                    self.sd_dir,
                    scrape_interval_s=self.scrape_interval_s,
                    relabel_vllm_names=self.relabel_vllm_names,
                    raw_job=self.raw_job,
                )
            )
        )
        self.port = free_port(self.host)
        self._spawn()

    def wait_ready(self, timeout_s: float = 30.0, attempts: int = 3) -> None:
        last_error = ""
        for attempt in range(attempts):
            if attempt:
                # The port was free when picked; another process can take it before Prometheus
                # binds it, in which case Prometheus exits at once and we try another.
                self.port = free_port(self.host)
                self._spawn()
            ok, last_error = self._wait_ready(timeout_s)
            if ok:
                return
            self.stop()
        raise PrometheusError(
            f"prometheus did not become ready: {last_error} (log: {self.log_file})"
        )

    def _spawn(self) -> None:
        log = self.log_file.open("ab")
        try:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.tsdb}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def _wait_ready(self, timeout_s: float) -> tuple[bool, str]:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        error = "timed out"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False, f"exited with status {self._proc.returncode}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True, ""
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                error = str(e)
            time.sleep(0.1)
        return False, error

    def update_targets(self, targets: list[dict[str, Any]], source: str = "sandbox") -> None:
        """Replace the targets of one `source` (each sandbox sharing this Prometheus has its own
        file_sd file)."""
        self.sd_dir.mkdir(parents=True, exist_ok=True)
        write_targets(self.sd_dir / f"{source}.json", targets)

    def remove_targets(self, source: str = "sandbox") -> None:
        (self.sd_dir / f"{source}.json").unlink(missing_ok=True)

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    # queries -----------------------------------------------------------------------------
    def query(self, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        return query(self.url, promql, timeout_s)

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        *,
        timeout_s: float = 30.0,
        poll_s: float = 0.25,
    ) -> list[dict[str, Any]]:
        return wait_for(self.url, promql, predicate, timeout_s=timeout_s, poll_s=poll_s)


def query(url: str, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """An instant query; returns `data.result` (vector results: [{"metric": {...}, "value": [t, "v"]}])."""
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=timeout_s) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise PrometheusError(f"query {promql!r} failed: {body.get('error')}")
    return body["data"]["result"]


def wait_for(
    url: str,
    promql: str,
    predicate: Callable[[list[dict[str, Any]]], bool] = bool,
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.25,
) -> list[dict[str, Any]]:
    """Poll an instant query until `predicate(result)` holds; raises TimeoutError with the last
    result otherwise."""
    deadline = time.monotonic() + timeout_s
    last: list[dict[str, Any]] = []
    while True:
        last = query(url, promql)
        if predicate(last):
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{promql!r} did not satisfy the condition within {timeout_s} s; last result: {last}"
            )
        time.sleep(poll_s)


def scalar(result: list[dict[str, Any]]) -> float | None:
    """The value of a one-element vector result, None for an empty one."""
    if not result:
        return None
    return float(result[0]["value"][1])
