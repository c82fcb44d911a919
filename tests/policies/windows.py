"""Fixed observation windows shared by the checkpoint tests (same decisions before/after save)."""

from __future__ import annotations

import numpy as np

from rlscale.contract import N_FIELDS, IntervalMetrics, ObservationSpec

SPEC = ObservationSpec(
    replica_capacity_rps=22.6,
    max_batch=256,
    ttft_slo_s=2.0,
    tpot_slo_s=0.1,
    max_replicas=32,
    window=4,
)


def fixed_windows(n: int = 100, seed: int = 0) -> list[list[IntervalMetrics]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rows = rng.uniform(0, 1, (SPEC.window, N_FIELDS))
        rows[:, 0] = 1.7e9 + rng.uniform(0, 86400)
        rows[:, 1] = 15.0
        rows[:, 2] = rng.uniform(0, 300)  # arrival_rps
        rows[:, 5] = rng.uniform(0, 500)  # waiting
        rows[:, 6] = rng.uniform(0, 500)
        rows[:, 8] = rng.uniform(0, 100)
        rows[:, 9:15] = rng.uniform(0, 5, (SPEC.window, 6))
        rows[:, 15:] = rng.integers(0, 12, (SPEC.window, N_FIELDS - 15))
        out.append([IntervalMetrics.from_array(r) for r in rows])
    return out
