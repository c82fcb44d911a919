"""Where a single Gymnasium step's time goes: the min-of-batches step time of
`gymnasium.make("rlscale/LLMAutoscale-v0")` (wrappers included) and a cProfile of 5,000 steps,
top functions by own time. Profiles the `rlscale` on sys.path, so a side by side is two runs:

    PYTHONPATH=. python benchmarks/env_step_profile.py
    git archive REV rlscale | tar -x -C /tmp/rev && PYTHONPATH=/tmp/rev python benchmarks/env_step_profile.py

benchmarks/results/env_step_profile.txt holds both for this branch and its base.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time

import gymnasium as gym
import numpy as np

import rlscale
import rlscale.envs  # noqa: F401  (registers the env id)


def main() -> None:
    env = gym.make("rlscale/LLMAutoscale-v0")
    env.reset(seed=0)
    action = np.zeros(2, dtype=np.float32)

    def run(n: int) -> None:
        for _ in range(n):
            _, _, term, trunc, _ = env.step(action)
            if term or trunc:
                env.reset()

    run(1000)  # compile (or load the numba cache), fill the caches
    best = min(_timed(run, 200) for _ in range(30))
    print(f"rlscale from {rlscale.__file__}")
    print(f"min per step over 30 batches of 200: {best * 1e6:.1f} us ({1 / best:,.0f} steps/s)")
    prof = cProfile.Profile()
    prof.enable()
    run(5000)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


def _timed(run, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    run(n)
    return (time.perf_counter() - t0) / n


if __name__ == "__main__":
    main()
