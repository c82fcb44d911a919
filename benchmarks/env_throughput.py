"""Simulator throughput: env-steps/s of the single Gymnasium env, the batched core at B = 1, 64,
1024, and the SB3 VecEnv (core + clamps + encoder) at B = 1024, all in one run so ratios are
comparable. Targets (issue #2): single env >= 30,000 steps/s; batched core >= 1,000,000
env-steps/s at B = 1024 on one core.

`--baseline REV` measures the same cases on the `rlscale` package of git revision REV too (an
export of it in a temporary folder, run in a subprocess), alternating baseline and current
`--rounds` times and keeping each case's best, so a change's cost reads side by side on the
same (shared) machine.

    python benchmarks/env_throughput.py [--seconds 3] [--baseline main] [--rounds 2]
        [--out benchmarks/results/env_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm up
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            fn()
        n += 20
    return n * batch / (time.perf_counter() - t0)


def measure(seconds: float) -> dict[str, float]:
    """Every case's env-steps/s with the `rlscale` on sys.path."""
    from rlscale.envs.cluster import ClusterSim
    from rlscale.envs.core import EnvConfig
    from rlscale.envs.gym_env import LLMAutoscaleEnv, default_workloads
    from rlscale.envs.vec_env import LLMAutoscaleVecEnv
    from rlscale.profiles.model import load_profile

    profile = load_profile("llama-3.1-8b-h100")
    workloads = default_workloads(profile)
    results: dict[str, float] = {}

    env = LLMAutoscaleEnv(profile, workloads, EnvConfig())
    env.reset(seed=0)
    action = np.zeros(2, dtype=np.float32)

    def single() -> None:
        _, _, _, trunc, _ = env.step(action)
        if trunc:
            env.reset()

    results["gym_env_steps_per_s"] = _rate(single, 1, seconds)

    # Two target patterns: "churn" draws a new target for every cluster every step (the worst
    # case: every step scales up or down everywhere); "steady" changes 10 % of the clusters'
    # targets per step, closer to a trained policy or an HPA.
    for pattern in ("churn", "steady"):
        for b in (1, 64, 1024):
            sim = ClusterSim(profile, workloads, batch=b, seed=0)
            rng = np.random.default_rng(0)
            draws = rng.integers(4, 16, size=(64, b)).astype(float)
            if pattern == "steady":
                keep = rng.random((64, b)) > 0.1
                for t in range(1, 64):
                    draws[t] = np.where(keep[t], draws[t - 1], draws[t])
            k = [0]

            def core(sim=sim, targets=draws, k=k) -> None:
                sim.step(targets[k[0] % 64])
                k[0] += 1
                if sim.done.any():
                    sim.reset(mask=sim.done)

            results[f"core_{pattern}_env_steps_per_s_B{b}"] = _rate(core, b, seconds)

    venv = LLMAutoscaleVecEnv(profile, workloads, n_envs=1024, config=EnvConfig(), seed=0)
    venv.reset()
    acts = np.random.default_rng(0).uniform(-1, 1, (1024, 2))

    def vec() -> None:
        venv.step_async(acts)
        venv.step_wait()

    results["vec_env_steps_per_s_B1024"] = _rate(vec, 1024, seconds)
    return results


def _export(rev: str, into: Path) -> Path:
    """`git archive REV rlscale` unpacked under `into`; returns the folder to put on sys.path."""
    root = Path(__file__).resolve().parents[1]
    tar = into / "rlscale.tar"
    with tar.open("wb") as fh:
        subprocess.run(["git", "archive", rev, "rlscale"], cwd=root, stdout=fh, check=True)
    with tarfile.open(tar) as tf:
        tf.extractall(into, filter="data")
    return into


def _measure_in(path: Path | None, seconds: float) -> dict[str, float]:
    """`measure` in a fresh interpreter with `path` (or this checkout) first on sys.path."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(path or root)}
    cmd = [sys.executable, __file__, "--child", "--seconds", str(seconds)]
    out = subprocess.run(cmd, env=env, cwd=path or root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default="benchmarks/results/env_throughput.json")
    ap.add_argument("--baseline", default=None, help="git revision to measure side by side")
    ap.add_argument("--rounds", type=int, default=2, help="alternations with --baseline")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.seconds)))
        return
    baseline: dict[str, float] | None = None
    if args.baseline is None:
        results = measure(args.seconds)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            base_path = _export(args.baseline, Path(tmp))
            runs: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
            for _ in range(max(args.rounds, 1)):
                runs["baseline"].append(_measure_in(base_path, args.seconds))
                runs["current"].append(_measure_in(None, args.seconds))
        best = {side: {k: max(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
        results, baseline = best["current"], best["baseline"]

    out: dict = {
        "benchmark": "env_throughput",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "seconds_per_case": args.seconds,
        "loadavg_1m": os.getloadavg()[0],
        "targets": {
            "gym_env_steps_per_s": 30_000,
            "core_churn_env_steps_per_s_B1024": 1_000_000,
            "core_steady_env_steps_per_s_B1024": 1_000_000,
        },
        "results": results,
    }
    if baseline is not None:
        out["baseline"] = {"revision": args.baseline, "rounds": args.rounds, "results": baseline}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for k_, v in results.items():
        target = out["targets"].get(k_)
        mark = (
            "" if target is None else f" (target {target:,}: {'met' if v >= target else 'MISSED'})"
        )
        side = "" if baseline is None else f" {baseline[k_]:>14,.0f} ({v / baseline[k_] - 1:+.0%})"
        print(f"{k_:32s} {v:>14,.0f}{side}{mark}")


if __name__ == "__main__":
    main()
