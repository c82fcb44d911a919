"""Sandbox soak: an hour of sandbox time at time scale 10 (about 6 minutes of wall time) with the
live controller scaling the sandbox's Deployment through the config `rlscale sandbox
--write-controller-config` writes, and Debian's real Prometheus. Writes
benchmarks/results/sandbox_soak.json and prints a summary.

    nice -n 10 python benchmarks/sandbox_soak.py [--sim-s 3600] [--time-scale 10] [--dry-run]

What it checks (issue 12: "the sandbox runs an hour at time scale 10 without its workload
dying"): the replay keeps stepping to the end with arrivals in every simulated minute, no
background task of the sandbox dies (`task_errors`), Prometheus answers a query every 20 s, the
controller ticks without a failed tick, and spec.replicas stays inside the policy's bounds. It
also compares the arrival rate the policy sees (the written config divides the rate queries by the
time scale) with the true rate over the same window of simulated time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "sandbox_soak.json"
PROFILE = "llama-3.1-8b-h100"
PROM_EVERY_S = 20.0


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim-s", type=float, default=3600.0, help="simulated seconds to run")
    ap.add_argument("--time-scale", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="the controller decides, writes nothing")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--ticks", action="store_true", help="also write every tick's record")
    args = ap.parse_args()

    from rlscale.deploy.config import parse_config
    from rlscale.deploy.controller import build_controller
    from rlscale.deploy.sandbox_config import sandbox_controller_config
    from rlscale.profiles.model import load_profile
    from rlscale.sandbox.replay import ReplayStep, replicas_for
    from rlscale.sandbox.runner import Sandbox
    from rlscale.traces.synthetic import default_workload

    profile = load_profile(PROFILE)
    workload = default_workload(args.seed)
    replicas = replicas_for(workload, profile)
    wall_s = args.sim_s / args.time_scale
    workdir = Path(tempfile.mkdtemp(prefix="rlscale-soak-"))
    sb = Sandbox(profile, workload, replicas=replicas, time_scale=args.time_scale, seed=args.seed)
    steps: list[tuple[float, float, int]] = []  # (simulated time, arrivals, ready replicas)
    lock = threading.Lock()

    def on_step(step: ReplayStep) -> None:
        with lock:
            steps.append((step.time_s, step.arrivals, step.ready_replicas))

    # The controller's logs go to a file; the summary counts them by level.
    log_counts: Counter[str] = Counter()

    class Counting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_counts[record.levelname] += 1

    rlscale_log = logging.getLogger("rlscale")
    rlscale_log.setLevel(logging.INFO)
    rlscale_log.propagate = False
    rlscale_log.addHandler(Counting())
    rlscale_log.addHandler(logging.FileHandler(workdir / "controller.log"))

    t_start = time.monotonic()
    sb.start()
    try:
        assert sb.replay is not None and sb.prometheus_url is not None
        sb.call(lambda _s: sb.replay.on_step.append(on_step))  # type: ignore[union-attr]
        data = sandbox_controller_config(
            prometheus_url=sb.prometheus_url,
            kubeconfig=sb.kubeconfig_path or workdir / "kubeconfig.yaml",
            namespace=sb.namespace,
            deployment=sb.deployment,
            profile=PROFILE,
            time_scale=args.time_scale,
            scrape_interval_s=sb.scrape_interval_s,
            dry_run=args.dry_run,
        )
        data["exporter"] = {"enabled": False}
        cfg = parse_config(data)
        window_sim_s = cfg.targets[0].metrics.rate_window_s * args.time_scale
        controller = build_controller(cfg, identity="soak")
        limits = controller.targets[0].policies.limits
        ticks: list[dict[str, Any]] = []
        tick = controller.tick

        def recording_tick(now_s: float) -> Any:
            out = tick(now_s)
            sim_now = sb.clock.now_s()
            with lock:
                recent = [a for t, a, _ in steps if sim_now - window_sim_s < t <= sim_now]
                changed = len({n for t, _, n in steps if sim_now - 2 * window_sim_s < t}) > 1
            for r in out:
                m = r.record.metrics
                ticks.append(
                    {
                        "sim_s": sim_now,
                        "ready_changed": changed,
                        "action": r.action,
                        "reason": r.record.reason,
                        "current": r.record.current,
                        "desired": r.record.desired,
                        "read_rps": m.arrival_rps if m is not None else None,
                        "true_rps": sum(recent) / window_sim_s if recent else None,
                        "error": r.apply.error if r.apply is not None else None,
                    }
                )
            return out

        controller.tick = recording_tick  # type: ignore[method-assign]
        stop = threading.Event()
        failed: list[str] = []

        def run() -> None:
            try:
                controller.run(stop)
            except BaseException as e:  # noqa: BLE001 - reported in the results
                failed.append(f"{type(e).__name__}: {e}")

        thread = threading.Thread(target=run, name="controller", daemon=True)
        thread.start()
        replica_samples: list[int] = []
        prom = {"asked": 0, "answered": 0, "values": []}
        t0 = time.monotonic()
        next_prom = t0 + PROM_EVERY_S  # the first sample once Prometheus has scraped
        while time.monotonic() - t0 < wall_s:
            now = time.monotonic()
            if now >= next_prom:
                next_prom += PROM_EVERY_S
                prom["asked"] += 1
                try:
                    out = sb.query('sum({__name__=~"vllm[:_]num_requests_running"})')
                    if out:
                        prom["answered"] += 1
                        prom["values"].append(round(float(out[0]["value"][1]), 1))
                except Exception:  # noqa: BLE001 - an unanswered query is what we count
                    pass
            replica_samples.append(int(sb.deployment_object()["spec"]["replicas"]))
            time.sleep(1.0)
        stop.set()
        thread.join(30)
        controller.close(release=True)
        task_errors = [f"{name}: {err!r}" for name, err in sb.task_errors]
        sim_end = sb.clock.now_s()
    finally:
        sb.stop()
    elapsed = time.monotonic() - t_start

    with lock:
        arrivals = [a for _, a, _ in steps]
        per_minute = Counter(int(t // 60) for t, a, _ in steps if a > 0)
        minutes = int(sim_end // 60)
        silent_minutes = [k for k in range(1, minutes) if per_minute.get(k, 0) == 0]
        last_step_sim_s = steps[-1][0] if steps else 0.0
        ready = [n for _, _, n in steps]
    ratios = [
        t["read_rps"] / t["true_rps"]
        for t in ticks
        if t["read_rps"] is not None
        and t["true_rps"]
        and math.isfinite(t["read_rps"])
        and t["sim_s"] > 2 * window_sim_s
    ]
    steady = [
        t["read_rps"] / t["true_rps"]
        for t in ticks
        if t["read_rps"] is not None
        and t["true_rps"]
        and math.isfinite(t["read_rps"])
        and t["sim_s"] > 2 * window_sim_s
        and not t["ready_changed"]
    ]
    actions = Counter(t["action"] for t in ticks)
    bounds = (limits.min_replicas, limits.max_replicas)
    held = all(bounds[0] <= n <= bounds[1] for n in replica_samples) and all(
        t["desired"] is None or bounds[0] <= t["desired"] <= bounds[1] for t in ticks
    )
    result = {
        "benchmark": "sandbox_soak",
        "profile": PROFILE,
        "workload": workload.name,
        "time_scale": args.time_scale,
        "controller": {
            "mode": "dry-run" if args.dry_run else "live",
            "policy": cfg.targets[0].policy.label,
            "tick_s": cfg.tick_s,
            "rate_window_s": cfg.targets[0].metrics.rate_window_s,
        },
        "sim_s_target": args.sim_s,
        "sim_s_reached": round(sim_end, 1),
        "wall_s": round(elapsed, 1),
        "initial_replicas": replicas,
        "workload_steps": {
            "count": len(steps),
            "last_step_sim_s": round(last_step_sim_s, 1),
            "arrivals_total": round(sum(arrivals), 1),
            "arrivals_per_step_mean": round(statistics.fmean(arrivals), 2) if arrivals else None,
            "arrivals_per_step_p5": round(pct(arrivals, 0.05), 2),
            "arrivals_per_step_p95": round(pct(arrivals, 0.95), 2),
            "simulated_minutes": minutes,
            "minutes_without_arrivals": silent_minutes,
            "ready_replicas_min": min(ready) if ready else None,
            "ready_replicas_max": max(ready) if ready else None,
        },
        "task_errors": task_errors,
        "prometheus": {
            "asked": prom["asked"],
            "answered": prom["answered"],
            "every_s": PROM_EVERY_S,
            "sum_running_first_last": (prom["values"][:1] + prom["values"][-1:]),
        },
        "controller_ticks": {
            "count": len(ticks),
            "by_action": dict(actions),
            "failed": actions.get("Failed", 0),
            "loop_errors": failed,
            "reasons": dict(Counter(t["reason"] for t in ticks)),
        },
        "arrival_estimate_vs_truth": {
            "ticks": len(ratios),
            "median": round(statistics.median(ratios), 3) if ratios else None,
            "p10": round(pct(ratios, 0.10), 3),
            "p90": round(pct(ratios, 0.90), 3),
            "within_20pct": round(sum(abs(r - 1) <= 0.2 for r in ratios) / len(ratios), 3)
            if ratios
            else None,
        },
        # Only ticks whose last two rate windows saw no change of the ready count: the sandbox
        # splits its fleet's queue and batch evenly over the ready pods, so a scale-up moves
        # requests onto the new pods at once (a cluster's pods keep theirs) and the old pods'
        # falling gauges read as fewer arrivals for a window.
        "arrival_estimate_vs_truth_steady_fleet": {
            "ticks": len(steady),
            "median": round(statistics.median(steady), 3) if steady else None,
            "p10": round(pct(steady, 0.10), 3),
            "p90": round(pct(steady, 0.90), 3),
            "within_20pct": round(sum(abs(r - 1) <= 0.2 for r in steady) / len(steady), 3)
            if steady
            else None,
        },
        "controller_log_records": dict(log_counts),
        "replicas": {
            "bounds": list(bounds),
            "observed_min": min(replica_samples) if replica_samples else None,
            "observed_max": max(replica_samples) if replica_samples else None,
            "bounds_held": held,
        },
        "workload_alive": (
            not task_errors
            and not silent_minutes
            and last_step_sim_s >= 0.98 * args.sim_s
            and prom["answered"] == prom["asked"]
        ),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }
    if args.ticks:
        result["ticks"] = ticks
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    w = result["workload_steps"]
    c = result["controller_ticks"]
    a = result["arrival_estimate_vs_truth"]
    print(
        f"sandbox soak: {result['sim_s_reached']:.0f} s simulated in {result['wall_s']:.0f} s wall "
        f"(x{args.time_scale:g}), workload {workload.name}"
    )
    print(
        f"  replay: {w['count']} steps to t={w['last_step_sim_s']:.0f} s, "
        f"{w['arrivals_per_step_mean']} arrivals/step, minutes without arrivals: "
        f"{len(w['minutes_without_arrivals'])}; task errors: {len(task_errors)}"
    )
    print(
        f"  prometheus: {prom['answered']}/{prom['asked']} answered; controller "
        f"({result['controller']['mode']}, {result['controller']['policy']}): {c['count']} ticks, "
        f"{c['failed']} failed, {dict(actions)}"
    )
    st = result["arrival_estimate_vs_truth_steady_fleet"]
    print(
        f"  arrivals read / true: median {a['median']}, p10 {a['p10']}, p90 {a['p90']}, "
        f"within 20%: {a['within_20pct']}; steady fleet ({st['ticks']} ticks): median "
        f"{st['median']}, p10 {st['p10']}, p90 {st['p90']}, within 20%: {st['within_20pct']}"
    )
    r = result["replicas"]
    print(
        f"  replicas {r['observed_min']}..{r['observed_max']} within bounds {r['bounds']}: "
        f"{r['bounds_held']}; workload alive: {result['workload_alive']}"
    )
    print(f"controller log: {workdir / 'controller.log'}")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
