"""`ClampedFleet`: a simulator (`ClusterSim` or the request-level `RequestSim`) whose every target
passes the production safety clamps.

The one "start the fleet within the limits, clamp, step" path: the evaluator's rollouts, the
tuner's batched trials and the RL environment all step the simulator through it, so a policy is
scored, tuned and trained under the limits the live controller applies (`rlscale.safety`).

Each cluster has its own `SafetyLimits`; clusters with equal limits share one batched
`ClampState` (the clamp is row-wise, so grouping them changes no number).

With a `ShieldConfig` (one for all, or one or None per cluster) the run-time shield
(`rlscale.serving.shield`) bounds each proposal before the clamp, as the controller does:
propose -> shield -> clamp -> step. Its firings per cluster are `shield_counts()`.

`engine="numpy"` clamps through `safety.clamp_batch_reference` (the numpy reference the clamp
kernel is held to), for a run of the whole pre-kernel path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rlscale.contract import FIELD_INDEX
from rlscale.envs.cluster import ClusterSim, Engine

if TYPE_CHECKING:
    from rlscale.envs.requests import RequestSim
from rlscale.safety import (
    ClampState,
    SafetyLimits,
    clamp_batch,
    clamp_batch_reference,
    clamp_warm,
)
from rlscale.serving.shield import FIRING_COLUMNS, Shield, ShieldConfig

_F = FIELD_INDEX


class ClampedFleet:
    """B clusters of `sim`, cluster b clamped by `limits[b]` (or one `SafetyLimits` for all).

    Each cluster's first clamp records its starting count as a recommendation, as the Kubernetes
    HPA does when it starts (`recordInitialRecommendation`): the first scale-down then waits out
    the down-stabilisation window, in evaluation, training and live alike."""

    def __init__(
        self,
        sim: ClusterSim | RequestSim,
        limits: SafetyLimits | Sequence[SafetyLimits],
        shield: ShieldConfig | Sequence[ShieldConfig | None] | None = None,
        engine: Engine = "numba",
    ) -> None:
        self.sim = sim
        self._clamp = clamp_batch if engine == "numba" else clamp_batch_reference
        per_cluster = [limits] * sim.batch if isinstance(limits, SafetyLimits) else list(limits)
        if len(per_cluster) != sim.batch:
            raise ValueError(f"{len(per_cluster)} limits for a batch of {sim.batch} clusters")
        members: dict[SafetyLimits, list[int]] = {}
        for b, lim in enumerate(per_cluster):
            members.setdefault(lim, []).append(b)
        interval_s = sim.config.interval_s
        # One group covering the batch indexes it whole (no gather/scatter per step).
        self._groups: list[tuple[SafetyLimits, slice | np.ndarray, ClampState]] = [
            (
                lim,
                slice(None) if len(idx) == sim.batch else np.asarray(idx, dtype=np.int64),
                ClampState.empty(len(idx), lim, interval_s, initial_recommendation=True),
            )
            for lim, idx in members.items()
        ]
        self.current = sim.ready.copy()
        self._shields = _shield_groups(sim, shield)
        self.last_fired = np.zeros(sim.batch, dtype=np.int64)

    def start(self, mask: np.ndarray | None = None, *, clip: bool = True) -> None:
        """Take the (just reset) simulator's fleet as the start of the clusters in `mask` (all by
        default) and forget their clamp history. `clip` moves the simulator's own opening guess
        into each cluster's limits; an explicit start (`clip=False`) is the caller's, used as given."""
        sim = self.sim
        every = np.ones(sim.batch, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        for lim, idx, state in self._groups:
            sel = np.nonzero(every)[0] if isinstance(idx, slice) else idx[every[idx]]
            if clip:
                sim.ready[sel] = np.clip(sim.ready[sel], lim.min_replicas, lim.max_replicas)
            sim.metrics[sel, _F["replicas_ready"]] = sim.ready[sel]
            sim.metrics[sel, _F["replicas_desired"]] = sim.ready[sel]
            self.current[sel] = sim.ready[sel]
            state.reset(None if mask is None else every[idx])
        for shield, sidx in self._shields:
            shield.reset(every[sidx])

    def step(
        self, proposed: np.ndarray, now_s: float, warm: np.ndarray | None = None
    ) -> np.ndarray:
        """Clamp the proposals (B,) (and warm-pool sizes, when the policy manages one) and advance
        the simulator one interval toward the result; returns its metrics rows (B, N_FIELDS).
        `now_s` only has to advance one interval per step: the clamp's windows are relative."""
        proposed = self._shielded(np.asarray(proposed, dtype=np.float64))
        target = np.empty(self.sim.batch)
        warm_target = None if warm is None else np.empty(self.sim.batch)
        for lim, idx, state in self._groups:
            w = None
            if warm is not None and warm_target is not None:
                w = clamp_warm(np.asarray(warm)[idx], lim).astype(np.float64)
                warm_target[idx] = w
            target[idx], _ = self._clamp(
                np.asarray(proposed)[idx], self.current[idx], now_s, lim, state, warm=w
            )
        self.current = target
        return self.sim.step(self.current, warm_target)

    def _shielded(self, proposed: np.ndarray) -> np.ndarray:
        """The proposals after each shielded cluster's shield (read on the interval that just
        ended, against the current targets); records what fired in `last_fired`."""
        self.last_fired[:] = 0
        if not self._shields:
            return proposed
        out = proposed.copy()
        rows = self.sim.metrics
        for shield, idx in self._shields:
            r = shield.apply(proposed[idx], self.current[idx], rows[idx])
            out[idx] = r.target
            self.last_fired[idx] = r.fired
        return out

    def shield_counts(self) -> list[dict[str, int]]:
        """Shield firings per cluster since its start, by kind (`FIRING_COLUMNS`); zeros for an
        unshielded cluster."""
        out = [dict.fromkeys(FIRING_COLUMNS, 0) for _ in range(self.sim.batch)]
        for shield, idx in self._shields:
            for b, counts in zip(idx, shield.counts(), strict=True):
                out[int(b)] = counts
        return out

    def shielded(self) -> np.ndarray:
        """(B,) bool: which clusters run under the shield."""
        on = np.zeros(self.sim.batch, dtype=bool)
        for _, idx in self._shields:
            on[idx] = True
        return on


def _shield_groups(
    sim: ClusterSim | RequestSim, shield: ShieldConfig | Sequence[ShieldConfig | None] | None
) -> list[tuple[Shield, np.ndarray]]:
    """One batched `Shield` per distinct config, over the clusters that have it."""
    per = (
        [shield] * sim.batch if shield is None or isinstance(shield, ShieldConfig) else list(shield)
    )
    if len(per) != sim.batch:
        raise ValueError(f"{len(per)} shield configs for a batch of {sim.batch} clusters")
    members: dict[ShieldConfig, list[int]] = {}
    for b, cfg in enumerate(per):
        if cfg is not None:
            members.setdefault(cfg, []).append(b)
    cfg_sim = sim.config
    return [
        (
            Shield(
                cfg,
                sim.profile,
                len(idx),
                interval_s=cfg_sim.interval_s,
                ttft_slo_s=cfg_sim.ttft_slo_s,
                tpot_slo_s=cfg_sim.tpot_slo_s,
                ttft_slo_s_per_1k_tokens=cfg_sim.ttft_slo_s_per_1k_tokens,
            ),
            np.asarray(idx, dtype=np.int64),
        )
        for cfg, idx in members.items()
    ]
