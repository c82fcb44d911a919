"""Training wall time before and after the simulator kernels: `rlscale train` from scratch on one
config for a bounded budget, once on the numpy reference path ("before") and once on the current
one ("after"), side by side (two processes at once, each `nice -n 10`, so both see the same
shared machine), and the wall time to the first validation score at or above the baseline rule's
(the tuned rule scores -1 by construction). Where no evaluation reaches it within the budget, the
wall time per 100k steps and the curve are the result.

"before" reproduces the pre-kernel path on this tree's contract: every `ClusterSim` (training
envs and the evaluator's rollouts) on `engine="numpy"`, the env's action map / encoder / reward
on the contract's numpy functions (`AutoscaleCore(engine="numpy")`) and the clamp on
`safety.clamp_batch_reference` (`ClampedFleet(engine="numpy")`), and the evaluator's metrics rows
converted by `dataclasses.astuple` as `IntervalMetrics.to_array` did; the kernels are held to
those references by the kernel-vs-reference tests, so both sides train on the same numbers. The
PPO update and the served policy's decisions (`PPOPolicy`, numpy) are the same code on both sides.

Each side also times its env steps (`LLMAutoscaleVecEnv.step_wait`) and its evaluations, so the
wall time splits into env, evaluation and the rest (SB3's rollout collection and updates).

    python benchmarks/train_walltime.py [--config training/default.yaml] [--steps 200000]
        [--every 50000] [--minutes 12] [--out benchmarks/results/train_walltime.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("before", "after")


class _Budget(Exception):
    """The wall-time budget ran out (raised from the evaluation hook, ends `learn`)."""


def _use_numpy_reference() -> None:
    """Make the numpy references the defaults of every constructor that picks an engine, and
    `IntervalMetrics.to_array` the `dataclasses.astuple` it was before."""
    from dataclasses import astuple

    import numpy as np

    from rlscale.contract import IntervalMetrics
    from rlscale.envs.cluster import ClusterSim
    from rlscale.envs.core import AutoscaleCore
    from rlscale.envs.fleet import ClampedFleet

    def to_array(self: IntervalMetrics) -> np.ndarray:
        return np.asarray(astuple(self), dtype=np.float64)

    IntervalMetrics.to_array = to_array  # type: ignore[method-assign]

    for fn in (ClusterSim.__init__, AutoscaleCore.__init__, ClampedFleet.__init__):
        names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
        defaults = list(fn.__defaults__ or ())
        at = names.index("engine") - (len(names) - len(defaults))
        defaults[at] = "numpy"
        fn.__defaults__ = tuple(defaults)


def run_side(side: str, config: str, steps: int, every: int, minutes: float) -> dict[str, Any]:
    """Train one side in this process; returns its timings and curve."""
    if side == "before":
        _use_numpy_reference()
    from rlscale.envs.vec_env import LLMAutoscaleVecEnv
    from rlscale.training import train as tr

    timers = {"env_s": 0.0, "eval_s": 0.0, "eval_cpu_s": 0.0}
    step_wait = LLMAutoscaleVecEnv.step_wait

    def timed_step_wait(self: LLMAutoscaleVecEnv) -> Any:
        t0 = time.perf_counter()
        out = step_wait(self)
        timers["env_s"] += time.perf_counter() - t0
        return out

    LLMAutoscaleVecEnv.step_wait = timed_step_wait  # type: ignore[method-assign]
    evaluate = tr.Evaluator.evaluate
    t_start, cpu_start = time.perf_counter(), time.process_time()
    budget_s = minutes * 60.0

    def timed_evaluate(self: tr.Evaluator, n: int, logger: Any | None = None) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        evaluate(self, n, logger)
        timers["eval_s"] += time.perf_counter() - t0
        timers["eval_cpu_s"] += time.process_time() - c0
        self.curve[-1]["eval_s_total"] = round(timers["eval_s"], 2)
        self.curve[-1]["env_s_total"] = round(timers["env_s"], 2)
        self.curve[-1]["since_start_s"] = round(time.perf_counter() - t_start, 2)
        curve.extend(self.curve[len(curve) :])
        if time.perf_counter() - t_start > budget_s:
            raise _Budget

    tr.Evaluator.evaluate = timed_evaluate  # type: ignore[method-assign]
    evaluate_baseline = tr.evaluate_baseline

    def timed_baseline(*a: Any, **kw: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = evaluate_baseline(*a, **kw)
        timers["eval_s"] += time.perf_counter() - t0
        timers["eval_cpu_s"] += time.process_time() - c0
        return out

    tr.evaluate_baseline = timed_baseline  # type: ignore[assignment]
    curve: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = tr.TrainConfig.load(
            ROOT / config,
            overrides=[
                f"total_timesteps={steps}",
                f"eval.every_steps={every}",
                f"out={tmp}/ckpt",
                "tensorboard_log=null",
            ],
        )
        stopped = "steps"
        try:
            tr.train(cfg, progress_bar=False, log=lambda msg: print(f"[{side}] {msg}", flush=True))
        except _Budget:
            stopped = "minutes"
    wall_s = time.perf_counter() - t_start
    cpu_s = time.process_time() - cpu_start
    base = curve[0]["baseline_score"] if curve else float("nan")
    reached = [p for p in curve if p["score"] >= p["baseline_score"]]
    trained = curve[-1]["timesteps"] if curve else 0
    rest_s = wall_s - timers["eval_s"]
    return {
        "side": side,
        "stopped_by": stopped,
        "wall_s": round(wall_s, 1),
        "timesteps": trained,
        "eval_s": round(timers["eval_s"], 1),
        # CPU seconds of this process: on a shared machine the steadier measure of the work
        "cpu_s": round(cpu_s, 1),
        "eval_cpu_s": round(timers["eval_cpu_s"], 1),
        "cpu_s_per_100k_steps_without_eval": round(
            (cpu_s - timers["eval_cpu_s"]) / max(trained, 1) * 1e5, 1
        ),
        "env_s": round(timers["env_s"], 1),
        "evaluations": len(curve),
        "baseline_score": base,
        "best_score": max((p["score"] for p in curve), default=float("nan")),
        "reached_baseline_at": (
            None
            if not reached
            else {"timesteps": reached[0]["timesteps"], "wall_s": reached[0]["since_start_s"]}
        ),
        "wall_s_per_100k_steps": round(wall_s / max(trained, 1) * 1e5, 1),
        "wall_s_per_100k_steps_without_eval": round(rest_s / max(trained, 1) * 1e5, 1),
        "env_s_per_100k_steps": round(timers["env_s"] / max(trained, 1) * 1e5, 2),
        "curve": [
            {
                k: p[k]
                for k in (
                    "timesteps",
                    "since_start_s",
                    "score",
                    "baseline_score",
                    "eval_s_total",
                    "env_s_total",
                )
            }
            for p in curve
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="training/default.yaml")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--every", type=int, default=50_000, help="eval.every_steps")
    ap.add_argument("--minutes", type=float, default=12.0, help="wall budget per side")
    ap.add_argument("--out", default="benchmarks/results/train_walltime.json")
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        os.nice(10)
        res = run_side(args.child, args.config, args.steps, args.every, args.minutes)
        print("RESULT " + json.dumps(res), flush=True)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps)]
    cmd += ["--every", str(args.every), "--minutes", str(args.minutes)]
    procs = {
        s: subprocess.Popen(
            [*cmd, "--child", s], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for s in args.sides
    }
    sides: dict[str, Any] = {}
    for s, p in procs.items():
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith("RESULT "):
                sides[s] = json.loads(line[len("RESULT ") :])
            else:
                print(line, end="")
        if p.wait() != 0:
            raise SystemExit(f"train_walltime: the {s!r} side failed (exit {p.returncode})")
    out = {
        "benchmark": "train_walltime",
        "config": args.config,
        "budget": {"timesteps": args.steps, "minutes_per_side": args.minutes},
        "eval_every_steps": args.every,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "note": "before and after ran at the same time (side by side), each nice -n 10, on a "
        "machine shared with other sessions",
        "loadavg_1m_at_end": os.getloadavg()[0],
        "sides": sides,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for s in args.sides:
        r = sides[s]
        hit = r["reached_baseline_at"]
        print(
            f"{s:6s} {r['timesteps']:>7,} steps in {r['wall_s']:7.1f} s "
            f"(eval {r['eval_s']:.1f} s, env {r['env_s']:.1f} s; CPU {r['cpu_s']:.0f} s, "
            f"eval CPU {r['eval_cpu_s']:.0f} s): "
            f"{r['wall_s_per_100k_steps']:.1f} s / 100k steps, "
            f"{r['wall_s_per_100k_steps_without_eval']:.1f} without eval; best score "
            f"{r['best_score']:.3f} vs baseline {r['baseline_score']:.3f}; reached it: "
            + ("never" if hit is None else f"at {hit['timesteps']:,} steps, {hit['wall_s']:.0f} s")
        )


if __name__ == "__main__":
    main()
