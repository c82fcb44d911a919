"""Simulator throughput, all in one run so ratios are comparable: env-steps/s of the single env
through plain `gymnasium.make` (its wrappers included; also with `engine="numpy"`, the numpy
reference of the same path), Gymnasium's `SyncVectorEnv` of 8 such
envs, the SB3 VecEnv (core + clamps + encoder) at B = 1024, the batched core (`ClusterSim.step`)
at B = 1, 64, 1024, and the request-level engine (`RequestSim`) in requests/s. Targets (issue
#16): single env >= 30,000 steps/s; batched core >= 1,000,000 env-steps/s at B = 1024 on one
core; request-level engine >= 1M requests in 30 s (33,333 requests/s).

`--baseline REV` measures the same cases on the `rlscale` package of git revision REV too (an
export of it in a temporary folder), `--baseline-path DIR` on the checkout at DIR (e.g. main's
worktree); each side runs in a fresh interpreter, alternating baseline and current `--rounds`
times and keeping each case's best, so a change's effect reads side by side on the same
(shared) machine.

    python benchmarks/env_throughput.py [--seconds 2] [--baseline main | --baseline-path DIR]
        [--rounds 2] [--out benchmarks/results/env_throughput.json]
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


def _request_engine_rps(n_requests: int) -> float:
    """Requests/s of `RequestSim` (static 8-replica fleet, conv sizes, 70 % load), as
    `benchmarks/fidelity.py --speed` measures it, on a shorter run."""
    from rlscale.envs.requests import RequestSim
    from rlscale.profiles.model import load_profile
    from rlscale.serving.capacity import replica_capacity_rps
    from rlscale.serving.model import SimConfig
    from rlscale.traces.workload import Workload

    profile, cfg = load_profile("llama-3.1-8b-h100"), SimConfig()
    isl, osl = 1155.0, 211.0
    rate = 0.7 * 8 * replica_capacity_rps(profile, isl, osl)
    bins = int(np.ceil(n_requests / (rate * cfg.interval_s)))
    w = Workload(
        "poisson", "bench", cfg.interval_s, np.full(bins, rate * cfg.interval_s),
        np.full(bins, isl), np.full(bins, osl), prompt_tokens_cv=0.96, output_tokens_cv=0.77,
    )  # fmt: skip
    sim = RequestSim(profile, [w], config=cfg, seed=0)
    sim.reset(initial_replicas=8)
    sim.step(np.array([8.0]))  # compile (or load the numba cache) outside the timing
    t0 = time.perf_counter()
    while not sim.done[0]:
        sim.step(np.array([8.0]))
    return float(sim.totals.arrived[0]) / (time.perf_counter() - t0)


def measure(seconds: float, n_requests: int) -> dict[str, float]:
    """Every case's env-steps/s (and the engine's requests/s) with the `rlscale` on sys.path."""
    import gymnasium as gym

    import rlscale.envs  # noqa: F401  (registers rlscale/LLMAutoscale-v0)
    from rlscale.envs.cluster import ClusterSim
    from rlscale.envs.core import EnvConfig
    from rlscale.envs.gym_env import default_workloads
    from rlscale.envs.vec_env import LLMAutoscaleVecEnv
    from rlscale.profiles.model import load_profile

    profile = load_profile("llama-3.1-8b-h100")
    workloads = default_workloads(profile)
    results: dict[str, float] = {}

    # as a new user steps it: gymnasium.make, wrappers (order enforcing, env checker) included
    env = gym.make("rlscale/LLMAutoscale-v0")
    env.reset(seed=0)
    action = np.zeros(2, dtype=np.float32)

    def single() -> None:
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            env.reset()

    results["gym_make_steps_per_s"] = _rate(single, 1, seconds)

    # the same env on the numpy reference of its whole path (contract, clamps, simulator): what
    # the kernels replace, on this tree's contract (a baseline tree without the switch skips it)
    try:
        ref_env = gym.make("rlscale/LLMAutoscale-v0", engine="numpy")
    except TypeError:
        pass
    else:
        ref_env.reset(seed=0)

        def single_numpy() -> None:
            _, _, term, trunc, _ = ref_env.step(action)
            if term or trunc:
                ref_env.reset()

        results["gym_make_numpy_engine_steps_per_s"] = _rate(single_numpy, 1, seconds)

    sync = gym.vector.SyncVectorEnv([lambda: gym.make("rlscale/LLMAutoscale-v0")] * 8)
    sync.reset(seed=0)
    sync_actions = np.zeros((8, 2), dtype=np.float32)
    results["sync_vector_env8_steps_per_s"] = _rate(lambda: sync.step(sync_actions), 8, seconds)

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

    results["sb3_vec_env_steps_per_s_B1024"] = _rate(vec, 1024, seconds)
    results["request_engine_requests_per_s"] = _request_engine_rps(n_requests)
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


def _measure_in(path: Path | None, seconds: float, n_requests: int) -> dict[str, float]:
    """`measure` in a fresh interpreter with `path` (or this checkout) first on sys.path."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(path or root)}
    cmd = [sys.executable, __file__, "--child", "--seconds", str(seconds)]
    cmd += ["--requests", str(n_requests)]
    out = subprocess.run(cmd, env=env, cwd=path or root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--requests", type=int, default=200_000, help="request-engine run length")
    ap.add_argument("--out", default="benchmarks/results/env_throughput.json")
    ap.add_argument("--baseline", default=None, help="git revision to measure side by side")
    ap.add_argument("--baseline-path", default=None, help="a checkout to measure side by side")
    ap.add_argument("--rounds", type=int, default=2, help="alternations with --baseline")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.seconds, args.requests)))
        return
    baseline: dict[str, float] | None = None
    label = args.baseline_path or args.baseline
    if label is None:
        results = measure(args.seconds, args.requests)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            base_path = (
                Path(args.baseline_path).resolve()
                if args.baseline_path
                else _export(args.baseline, Path(tmp))
            )
            runs: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
            for _ in range(max(args.rounds, 1)):
                runs["baseline"].append(_measure_in(base_path, args.seconds, args.requests))
                runs["current"].append(_measure_in(None, args.seconds, args.requests))
        # cases the baseline does not have (a new benchmark case) are left out of its side
        best = {
            side: {k: max(r[k] for r in rs if k in r) for k in rs[0]} for side, rs in runs.items()
        }
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
            "gym_make_steps_per_s": 30_000,
            "core_churn_env_steps_per_s_B1024": 1_000_000,
            "core_steady_env_steps_per_s_B1024": 1_000_000,
            "request_engine_requests_per_s": 1_000_000 / 30,
        },
        "results": results,
    }
    if baseline is not None:
        out["baseline"] = {"revision": label, "rounds": args.rounds, "results": baseline}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for k_, v in results.items():
        target = out["targets"].get(k_)
        mark = (
            ""
            if target is None
            else f" (target {target:,.0f}: {'met' if v >= target else 'MISSED'})"
        )
        side = (
            ""
            if baseline is None or k_ not in baseline
            else f"  before {baseline[k_]:>12,.0f}  (x{v / baseline[k_]:.1f})"
        )
        print(f"{k_:38s} {v:>12,.0f}{side}{mark}")


if __name__ == "__main__":
    main()
